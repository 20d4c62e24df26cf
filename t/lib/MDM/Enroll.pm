package MDM::Enroll;

# What the enrollment tests (t/50-enroll*.t) share: the PKI of an
# enrollment server (profile signer, SCEP CA, a fake "Apple" device CA),
# the module's configuration, signing request bodies with `openssl cms`,
# checking a profile's signature with `openssl cms -verify`, and a small
# XML plist reader and writer (no CPAN module needed).
#
#   my $e = MDM::Enroll->new($t);
#   $t->write_conf($e->http_conf . "server { ... $e->{ade} ... }");
#   my ($ok, $xml, $err) = $e->verify_profile($r->{body});
#   my $profile = MDM::Enroll::parse_plist($xml);

use strict;
use warnings;

use Carp qw(croak);
use Exporter qw(import);
use MIME::Base64 qw(encode_base64 decode_base64);

our @EXPORT_OK = qw(parse_plist plist_xml);

my $APPLE_CHAIN = 'enroll/zentral_Apple_iPhone_Device_CA_Fullchain.pem';
my $CAPTURE = 'enroll/zentral_ota_payload_phase_2.der';
my $PUSH = 'apns/nanomdm_push.pem';

sub new {
    my ($class, $t) = @_;

    my $self = bless { t => $t }, $class;
    my $v = $t->vectors_dir;

    # the profile signer: a CA and a leaf without extended key usage, so
    # that openssl cms -verify's S/MIME purpose check passes
    $self->{sign_ca} = $t->make_ca(name => 'profile-ca');
    $self->{signer} = $t->make_cert(ca => $self->{sign_ca},
                                    cn => 'MDM Profile Signing',
                                    name => 'profile-signer');

    # our SCEP CA (phase-3 identities are made by the test with it)
    $self->{scep_ca} = $t->make_ca(name => 'scep-ca',
                                   subject => '/O=nginx-mdm test/CN=SCEP CA');

    # a stand-in for Apple iPhone Device CA, to sign MachineInfos with
    # OS_VERSION (no real one exists in the vectors)
    $self->{fake_apple} = $t->make_ca(name => 'fake-apple-device-ca');

    $self->{capture} = $t->read_file("$v/$CAPTURE")
        // die "cannot read $v/$CAPTURE\n";
    $self->{apple_chain} = "$v/$APPLE_CHAIN";
    $self->{push_cert} = "$v/$PUSH";

    # the topic is the push certificate's UID
    my $subject = $t->run_command([ 'openssl', 'x509', '-in',
                                    $self->{push_cert}, '-noout', '-subject',
                                    '-nameopt', 'RFC2253' ]);
    ($self->{topic}) = $subject->{stdout} =~ /UID=(com\.apple\.mgmt\.[^,\s]+)/
        or die "no topic in $self->{push_cert}\n";

    return $self;
}

sub capture { $_[0]{capture} }
sub topic   { $_[0]{topic} }

# The content of the real phase-2 capture, as a hash.
sub capture_content {
    my ($self) = @_;
    my $t = $self->{t};
    my $in = $t->write_file('tmp/capture.der', $self->{capture});
    my $r = $t->run_command([ 'openssl', 'cms', '-verify', '-noverify',
                              '-inform', 'DER', '-in', $in ]);
    die "capture: $r->{stderr}\n" if $r->{status};
    return parse_plist($r->{stdout});
}

# Directives shared by every enrollment location (http level).
sub http_conf {
    my ($self, %o) = @_;
    my $port = $self->{t}->port(0);
    my $base = "https://mdm.example.org";
    return <<"EOF";
    mdm_enroll_signing_certificate $self->{signer}{cert};
    mdm_enroll_signing_certificate_key $self->{signer}{key};
    mdm_enroll_push_certificate $self->{push_cert};
    mdm_enroll_scep_url $base/mdm/apple/scep;
    mdm_enroll_server_url $base/mdm/apple/mdm;
    mdm_enroll_ota_url $base/api/latest/fleet/ota_enrollment;
    mdm_enroll_scep_ca $self->{scep_ca}{cert};
    mdm_enroll_organization "nginx-mdm tests";
    mdm_enroll_display_name "Test MDM";
    mdm_enroll_scep_subject "/O=nginx-mdm tests/CN=MDM Identity";
    mdm_enroll_challenge_ttl 10m;
EOF
}

# openssl cms -verify against the profile signer's CA: ($ok, $content,
# $stderr).  The content is the XML plist the device would install.
sub verify_profile {
    my ($self, $der, %o) = @_;
    my $t = $self->{t};
    my $n = ++$self->{n};
    my $in = $t->write_file("tmp/profile-$n.der", $der);
    my $r = $t->run_command([ 'openssl', 'cms', '-verify', '-binary',
                              '-inform', 'DER', '-in', $in,
                              '-CAfile', $o{ca} // $self->{sign_ca}{cert},
                              '-out', $t->path("tmp/profile-$n.xml") ]);
    return ($r->{status} == 0, $t->read_file("tmp/profile-$n.xml") // '',
            $r->{stderr});
}

# CMS SignedData (attached) of $content, as a device signs its bodies.
sub sign {
    my ($self, $content, $cert, $key, %o) = @_;
    my $t = $self->{t};
    my $n = ++$self->{n};
    my $in = $t->write_file("tmp/body-$n.xml", $content);
    my @chain = $o{chain} ? ('-certfile', $o{chain}) : ();
    my $r = $t->run_command([ 'openssl', 'cms', '-sign', '-binary',
                              '-nodetach', '-nosmimecap', '-outform', 'DER',
                              '-md', $o{md} // 'sha256', '-in', $in,
                              '-signer', $cert, '-inkey', $key, @chain,
                              '-out', $t->path("tmp/body-$n.der") ]);
    die "openssl cms -sign: $r->{stderr}\n" if $r->{status};
    return $t->read_file("tmp/body-$n.der");
}

###########################################################################
# XML plists: enough of the format for profiles and device bodies.

# XML text -> Perl: dict -> hash, array -> array, integer/real/string ->
# scalar, true/false -> 1/0, data -> { data => bytes }, date -> { date }.
sub parse_plist {
    my ($xml) = @_;
    $xml =~ s/<\?xml.*?\?>//s;
    $xml =~ s/<!DOCTYPE.*?>//s;
    $xml =~ s/^\s*<plist[^>]*>//s or croak "not a plist";
    my $value = _value(\$xml);
    $xml =~ s/^\s*<\/plist>\s*//s or croak "no </plist>";
    return $value;
}

sub _unescape {
    my ($s) = @_;
    $s =~ s/&lt;/</g;
    $s =~ s/&gt;/>/g;
    $s =~ s/&quot;/"/g;
    $s =~ s/&apos;/'/g;
    $s =~ s/&#(\d+);/chr $1/ge;
    $s =~ s/&amp;/&/g;
    return $s;
}

sub _value {
    my ($x) = @_;
    $$x =~ s/^\s+//;
    if ($$x =~ s/^<dict\/>//) { return {} }
    if ($$x =~ s/^<array\/>//) { return [] }
    if ($$x =~ s/^<string\/>//) { return '' }
    if ($$x =~ s/^<true\/>//) { return 1 }
    if ($$x =~ s/^<false\/>//) { return 0 }
    if ($$x =~ s/^<(string|integer|real)>(.*?)<\/\1>//s) {
        return _unescape($2);
    }
    if ($$x =~ s/^<data>(.*?)<\/data>//s) {
        return { data => decode_base64($1) };
    }
    if ($$x =~ s/^<date>(.*?)<\/date>//s) { return { date => $1 } }
    if ($$x =~ s/^<dict>//) {
        my %h;
        while (1) {
            $$x =~ s/^\s+//;
            last if $$x =~ s/^<\/dict>//;
            $$x =~ s/^<key>(.*?)<\/key>//s or croak "no key in dict";
            my $k = _unescape($1);
            $h{$k} = _value($x);
        }
        return \%h;
    }
    if ($$x =~ s/^<array>//) {
        my @a;
        while (1) {
            $$x =~ s/^\s+//;
            last if $$x =~ s/^<\/array>//;
            push @a, _value($x);
        }
        return \@a;
    }
    croak 'unexpected plist text: ' . substr($$x, 0, 40);
}

# Perl -> XML plist: hash -> dict (keys sorted), array -> array, \1 / \0
# -> true / false, { integer => n } -> integer, { data => bytes } -> data,
# anything else -> string.
sub plist_xml {
    my ($v) = @_;
    return qq{<?xml version="1.0" encoding="UTF-8"?>\n}
         . qq{<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" }
         . qq{"http://www.apple.com/DTDs/PropertyList-1.0.dtd">\n}
         . qq{<plist version="1.0">\n} . _xml($v) . "</plist>\n";
}

sub _escape {
    my ($s) = @_;
    $s =~ s/&/&amp;/g;
    $s =~ s/</&lt;/g;
    $s =~ s/>/&gt;/g;
    return $s;
}

sub _xml {
    my ($v) = @_;
    if (ref $v eq 'HASH' && exists $v->{integer} && keys %$v == 1) {
        return "<integer>$v->{integer}</integer>\n";
    }
    if (ref $v eq 'HASH' && exists $v->{data} && keys %$v == 1) {
        return '<data>' . encode_base64($v->{data}, '') . "</data>\n";
    }
    if (ref $v eq 'HASH') {
        return "<dict>\n" . join('', map {
            '<key>' . _escape($_) . "</key>\n" . _xml($v->{$_})
        } sort keys %$v) . "</dict>\n";
    }
    if (ref $v eq 'ARRAY') {
        return "<array>\n" . join('', map { _xml($_) } @$v) . "</array>\n";
    }
    if (ref $v eq 'SCALAR') {
        return $$v ? "<true/>\n" : "<false/>\n";
    }
    return '<string>' . _escape($v) . "</string>\n";
}

1;
