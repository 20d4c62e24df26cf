package MDM::Device;

# A simulated Apple device for the check-in and command protocol: it holds
# an identity certificate and key (made by the test harness with a
# SCEP-like CA), builds the check-in and report plists a Mac, an iPhone or
# an iPad sends (keys and shapes as in ../shared/vectors/checkin and
# commands), sends them over mutual TLS or with an Mdm-Signature header (or
# both), and parses the command plists it gets back.
#
#   my $mac = MDM::Device->new($t, ca => $ca, kind => 'mac');
#   $mac->authenticate;                   # {status, body, ...}
#   $mac->token_update;
#   my $r = $mac->idle;                   # $r->{command}: parsed plist
#   $mac->report('Acknowledged', $r->{command}{CommandUUID});
#   my $user = $mac->user_channel(short_name => 'ann');
#   $mac->token_update(user => $user);
#
# Plist values: strings are Perl strings; MDM::Device::data($bytes),
# MDM::Device::true, MDM::Device::false and MDM::Device::integer($n) make
# the other types.  parse_plist() gives data as MDM::Device::Data objects
# ($d->bytes), booleans as MDM::Device::true / false, integers as numbers.

use strict;
use warnings;

use Carp qw(croak);
use Digest::SHA qw(sha256_hex);
use MIME::Base64 qw(encode_base64 decode_base64);

our $SHARED_IPAD_USER = 'FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFF';

my $SEQ = 0;

###########################################################################
# Values

package MDM::Device::Data {
    sub new   { my ($c, $b) = @_; bless { bytes => $b }, $c }
    sub bytes { $_[0]{bytes} }
}
package MDM::Device::Bool {
    sub new   { my ($c, $v) = @_; bless { value => $v ? 1 : 0 }, $c }
    sub value { $_[0]{value} }
}
package MDM::Device::Integer {
    sub new   { my ($c, $v) = @_; bless { value => $v }, $c }
    sub value { $_[0]{value} }
}

package MDM::Device;

sub data    { MDM::Device::Data->new($_[0]) }
sub true    { MDM::Device::Bool->new(1) }
sub false   { MDM::Device::Bool->new(0) }
sub integer { MDM::Device::Integer->new($_[0]) }

###########################################################################
# Plist writer (XML, the form devices send) and reader (XML or binary)

sub _esc {
    my ($s) = @_;
    $s =~ s/&/&amp;/g;
    $s =~ s/</&lt;/g;
    $s =~ s/>/&gt;/g;
    return $s;
}

sub _value_xml {
    my ($v, $indent) = @_;
    my $in = "\t" x $indent;
    my $r = ref $v;

    if (!$r) {
        return "$in<string>" . _esc($v) . "</string>\n";
    } elsif ($r eq 'HASH') {
        return "$in<dict/>\n" unless %$v;
        my $x = "$in<dict>\n";
        for my $k (sort keys %$v) {
            $x .= "$in\t<key>" . _esc($k) . "</key>\n"
                  . _value_xml($v->{$k}, $indent + 1);
        }
        return $x . "$in</dict>\n";
    } elsif ($r eq 'ARRAY') {
        return "$in<array/>\n" unless @$v;
        return "$in<array>\n" . join('', map { _value_xml($_, $indent + 1) }
                                           @$v)
               . "$in</array>\n";
    } elsif ($r eq 'MDM::Device::Data') {
        my $b64 = encode_base64($v->bytes, '');
        return "$in<data>$b64</data>\n";
    } elsif ($r eq 'MDM::Device::Bool') {
        return $v->value ? "$in<true/>\n" : "$in<false/>\n";
    } elsif ($r eq 'MDM::Device::Integer') {
        return "$in<integer>" . $v->value . "</integer>\n";
    }
    croak "no plist form for $r";
}

sub plist_xml {
    my ($root) = @_;
    return qq{<?xml version="1.0" encoding="UTF-8"?>\n}
         . qq{<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" }
         . qq{"http://www.apple.com/DTDs/PropertyList-1.0.dtd">\n}
         . qq{<plist version="1.0">\n}
         . _value_xml($root, 0)
         . qq{</plist>\n};
}

sub _unesc {
    my ($s) = @_;
    $s =~ s/&lt;/</g;
    $s =~ s/&gt;/>/g;
    $s =~ s/&quot;/"/g;
    $s =~ s/&apos;/'/g;
    $s =~ s/&#x([0-9a-fA-F]+);/chr hex $1/ge;
    $s =~ s/&#([0-9]+);/chr $1/ge;
    $s =~ s/&amp;/&/g;
    return $s;
}

# XML plist bytes (or binary, through plistutil) -> Perl structure
sub parse_plist {
    my ($bytes, %o) = @_;

    if ($bytes =~ /^bplist/) {
        my $t = $o{t} or croak 'a binary plist needs t => $harness';
        my $in = $t->write_file('device-bplist-' . ++$SEQ, $bytes);
        my $r = $t->run_command(['plistutil', '-i', $in, '-f', 'xml']);
        croak "plistutil: $r->{stderr}" if $r->{status};
        $bytes = $r->{stdout};
    }

    my @tok;
    my $x = $bytes;
    $x =~ s/<\?xml.*?\?>//s;
    $x =~ s/<!DOCTYPE[^>]*>//s;
    $x =~ s/<!--.*?-->//gs;
    while ($x =~ m{<(/?)([a-zA-Z]+)\s*[^>]*?(/?)>([^<]*)}g) {
        push @tok, [$1, $2, $3, $4];
    }

    my $i = 0;
    my $value;
    $value = sub {
        my $t = $tok[$i++] or croak 'truncated plist';
        my ($close, $tag, $empty, $text) = @$t;
        croak "unexpected </$tag>" if $close;
        if ($tag eq 'plist') {
            my $v = $value->();
            $i++;       # </plist>
            return $v;
        }
        if ($tag eq 'dict') {
            my %d;
            return \%d if $empty;
            while ($tok[$i][1] ne 'dict' || !$tok[$i][0]) {
                my $k = $tok[$i++];
                croak "dict key expected, got <$k->[1]>" if $k->[1] ne 'key';
                $i++;   # </key>
                $d{ _unesc($k->[3]) } = $value->();
            }
            $i++;
            return \%d;
        }
        if ($tag eq 'array') {
            my @a;
            return \@a if $empty;
            push @a, $value->() while !($tok[$i][1] eq 'array'
                                        && $tok[$i][0]);
            $i++;
            return \@a;
        }
        if ($tag eq 'true' || $tag eq 'false') {
            $i++ unless $empty;     # <false></false>
            return MDM::Device::Bool->new($tag eq 'true');
        }
        my $content = $empty ? '' : $text;
        $i++ unless $empty;     # the closing tag
        return MDM::Device::Data->new(decode_base64($content))
            if $tag eq 'data';
        return _unesc($content) if $tag eq 'string' || $tag eq 'date';
        return 0 + $content if $tag eq 'integer' || $tag eq 'real';
        croak "unknown plist tag <$tag>";
    };

    my $root = $value->();
    undef $value;
    return $root;
}

# XML -> binary plist bytes, through plistutil (libplist-utils)
sub to_binary {
    my ($t, $xml) = @_;
    my $in = $t->write_file('device-xml-' . ++$SEQ, $xml);
    my $r = $t->run_command(['plistutil', '-i', $in, '-f', 'bin']);
    croak "plistutil: $r->{stderr}" if $r->{status};
    return $r->{stdout};
}

###########################################################################
# The device

my %KIND = (
    mac => {
        Model => 'Mac14,2', ModelName => 'MacBook Air',
        ProductName => 'Mac14,2', OSVersion => '14.4.1',
        BuildVersion => '23E224', DeviceName => 'Test Mac',
    },
    iphone => {
        ProductName => 'iPhone15,2', OSVersion => '17.4.1',
        BuildVersion => '21E236',
        IMEI => '35 209900 176148 1', MEID => '35209900176148',
    },
    ipad => {
        ProductName => 'iPad13,18', OSVersion => '17.4.1',
        BuildVersion => '21E236',
    },
);

sub _udid {
    my ($kind) = @_;
    my @h = map { sprintf '%02X', int rand 256 } 1 .. 16;
    my $u = join '', @h;
    return $kind eq 'mac'
        ? join('-', substr($u, 0, 8), substr($u, 8, 4), substr($u, 12, 4),
               substr($u, 16, 4), substr($u, 20, 12))
        : '00008110-' . substr($u, 0, 16);
}

# new($t, ca => $ca, kind => mac|iphone|ipad, udid => ..., serial => ...,
#     topic => ..., user_enrollment => 1 (EnrollmentID instead of UDID),
#     transport => mtls|signature|both, url => '/mdm/apple/mdm',
#     checkin_url => (default url), port => harness port name,
#     identity => { cert, key } (else a new one from ca), binary => 1)
sub new {
    my ($class, $t, %o) = @_;

    my $kind = $o{kind} // 'mac';
    $KIND{$kind} or croak "unknown kind $kind";

    my $self = bless {
        t         => $t,
        kind      => $kind,
        topic     => $o{topic} // 'com.apple.mgmt.External.'
                                  . 'e0bd1eac-1f17-4c8e-8a63-dd17d3dd35d9',
        serial    => $o{serial} // sprintf('C02TEST%05d', ++$SEQ),
        transport => $o{transport} // 'mtls',
        url       => $o{url} // '/mdm/apple/mdm',
        port      => $o{port} // 0,
        binary    => $o{binary} // 0,
        push_magic => $o{push_magic} // _uuid(),
        token     => $o{token} // join('', map { chr int rand 256 } 1 .. 32),
    }, $class;
    $self->{checkin_url} = $o{checkin_url} // $self->{url};

    if ($o{user_enrollment}) {
        $self->{enrollment_id} = $o{enrollment_id} // _uuid();
    } else {
        $self->{udid} = $o{udid} // _udid($kind);
    }

    $self->{identity} = $o{identity} // do {
        croak 'new() needs ca => or identity =>' unless $o{ca};
        $t->make_cert(ca => $o{ca}, ext => 'clientAuth',
                      cn => $self->id, name => 'device-' . ++$SEQ);
    };

    return $self;
}

sub _uuid {
    my $h = join '', map { sprintf '%02X', int rand 256 } 1 .. 16;
    return join '-', substr($h, 0, 8), substr($h, 8, 4), substr($h, 12, 4),
                     substr($h, 16, 4), substr($h, 20, 12);
}

sub id       { $_[0]{udid} // $_[0]{enrollment_id} }
sub udid     { $_[0]{udid} }
sub topic    { $_[0]{topic} }
sub serial   { $_[0]{serial} }
sub identity { $_[0]{identity} }
sub cert     { $_[0]{identity}{cert} }
sub key      { $_[0]{identity}{key} }
sub sha256   { $_[0]{t}->cert_sha256($_[0]{identity}{cert}) }
sub token    { $_[0]{token} }
sub push_magic { $_[0]{push_magic} }

# the identity keys of every message of a channel
sub _ident {
    my ($self, $user) = @_;
    my %k = $self->{udid} ? (UDID => $self->{udid})
                          : (EnrollmentID => $self->{enrollment_id});
    if ($user) {
        if ($user->{enrollment_user_id}) {
            $k{EnrollmentUserID} = $user->{enrollment_user_id};
        } else {
            $k{UserID} = $user->{user_id};
            $k{UserShortName} = $user->{short_name} if $user->{short_name};
            $k{UserLongName} = $user->{long_name} if $user->{long_name};
        }
    }
    return %k;
}

# a user channel: macOS user (UserID), Shared iPad user (shared_ipad =>
# 1, by short name) or the user of a User Enrollment
sub user_channel {
    my ($self, %o) = @_;
    my $u = { token => join('', map { chr int rand 256 } 1 .. 32),
              push_magic => _uuid() };
    if ($self->{enrollment_id}) {
        $u->{enrollment_user_id} = $o{enrollment_user_id} // _uuid();
        $u->{id} = "$self->{enrollment_id}:$u->{enrollment_user_id}";
    } elsif ($o{shared_ipad}) {
        $u->{user_id} = $SHARED_IPAD_USER;
        $u->{short_name} = $o{short_name} // 'student1@example.org';
        $u->{long_name} = $o{long_name} // 'Student One';
        $u->{id} = "$self->{udid}:$u->{short_name}";
    } else {
        $u->{user_id} = $o{user_id} // _uuid();
        $u->{short_name} = $o{short_name} // 'ann';
        $u->{long_name} = $o{long_name} // 'Ann Example';
        $u->{id} = "$self->{udid}:$u->{user_id}";
    }
    return $u;
}

###########################################################################
# Messages

sub authenticate_plist {
    my ($self, %extra) = @_;
    my %m = (MessageType => 'Authenticate', Topic => $self->{topic},
             $self->_ident);
    my $k = $KIND{ $self->{kind} };
    %m = (%m, %$k, SerialNumber => $self->{serial})
        unless $self->{enrollment_id};      # User Enrollment: no hardware ids
    delete @m{qw(SerialNumber IMEI MEID)} if $self->{enrollment_id};
    return { %m, %extra };
}

sub token_update_plist {
    my ($self, %o) = @_;
    my $user = $o{user};
    my %m = (MessageType => 'TokenUpdate', Topic => $self->{topic},
             $self->_ident($user),
             Token => data($user ? $user->{token} : $self->{token}),
             PushMagic => $user ? $user->{push_magic} : $self->{push_magic});
    if ($user) {
        $m{NotOnConsole} = false if $self->{kind} eq 'mac'
                                    && !$user->{enrollment_user_id};
    } else {
        $m{AwaitingConfiguration} = $o{awaiting} ? true : false;
        $m{UnlockToken} = data($o{unlock_token})
            if defined $o{unlock_token};
    }
    return \%m;
}

sub authenticate {
    my ($self, %o) = @_;
    return $self->checkin($self->authenticate_plist(%{ $o{extra} || {} }),
                          %o);
}

sub token_update {
    my ($self, %o) = @_;
    return $self->checkin($self->token_update_plist(%o), %o);
}

sub check_out {
    my ($self, %o) = @_;
    return $self->checkin({ MessageType => 'CheckOut',
                            Topic => $self->{topic}, $self->_ident }, %o);
}

sub set_bootstrap_token {
    my ($self, $token, %o) = @_;
    my %m = (MessageType => 'SetBootstrapToken', $self->_ident,
             AwaitingConfiguration => false);
    $m{BootstrapToken} = data($token) if defined $token;
    return $self->checkin(\%m, %o);
}

sub get_bootstrap_token {
    my ($self, %o) = @_;
    return $self->checkin({ MessageType => 'GetBootstrapToken',
                            AwaitingConfiguration => false,
                            $self->_ident }, %o);
}

sub user_authenticate {
    my ($self, $user, %o) = @_;
    my %m = (MessageType => 'UserAuthenticate', $self->_ident($user));
    $m{DigestResponse} = $o{digest_response} if defined $o{digest_response};
    return $self->checkin(\%m, %o);
}

sub declarative_management {
    my ($self, $endpoint, %o) = @_;
    return $self->checkin({ MessageType => 'DeclarativeManagement',
                            Endpoint => $endpoint,
                            $self->_ident($o{user}) }, %o);
}

sub checkin {
    my ($self, $msg, %o) = @_;
    return $self->send($msg, %o, url => $o{url} // $self->{checkin_url},
                       content_type => 'application/x-apple-aspen-mdm-checkin');
}

# a command report; extra keys (results) go at the top level
sub report {
    my ($self, $status, $uuid, %o) = @_;
    my %m = (Status => $status, $self->_ident($o{user}),
             %{ $o{extra} || {} });
    $m{CommandUUID} = $uuid if defined $uuid;
    if ($status eq 'Error') {
        $m{ErrorChain} //= [ { ErrorCode => integer(12021),
                               ErrorDomain => 'MCMDMErrorDomain',
                               LocalizedDescription => 'Test error',
                               USEnglishDescription => 'Test error' } ];
    }
    return $self->send(\%m, %o);
}

sub idle {
    my ($self, %o) = @_;
    return $self->report('Idle', undef, %o);
}

# Idle, then Acknowledged for every command until the queue is empty;
# returns the commands received (parsed), in order.
sub drain {
    my ($self, %o) = @_;
    my @got;
    my $r = $self->idle(%o);
    while ($r->{status} == 200 && $r->{command}) {
        push @got, $r->{command};
        die "more than 100 commands\n" if @got > 100;
        $r = $self->report('Acknowledged', $r->{command}{CommandUUID}, %o);
    }
    die "drain: status $r->{status}\n" if $r->{status} != 200;
    return @got;
}

# the Mdm-Signature value: base64 of a detached CMS SignedData over body
sub mdm_signature {
    my ($self, $body, %o) = @_;
    my $t = $self->{t};
    my $in = $t->write_file('device-body-' . ++$SEQ, $body);
    my $out = $t->path("device-sig-$SEQ.der");
    my $id = $o{identity} // $self->{identity};
    my $r = $t->run_command([ 'openssl', 'cms', '-sign', '-binary',
                              '-in', $in, '-signer', $id->{cert},
                              '-inkey', $id->{key}, '-outform', 'DER',
                              '-out', $out ]);
    croak "openssl cms -sign: $r->{stderr}" if $r->{status};
    return encode_base64($t->read_file($out), '');
}

# send a plist (hash) or raw bytes; options: url, transport, binary,
# content_type, headers, identity (another cert/key), no_cert, signature
# (a given Mdm-Signature value), https (default 1), port
sub send {
    my ($self, $msg, %o) = @_;
    my $t = $self->{t};

    my $body = ref $msg ? plist_xml($msg) : $msg;
    $body = to_binary($t, $body) if ($o{binary} // $self->{binary}) && ref $msg;

    my $transport = $o{transport} // $self->{transport};
    my $id = $o{identity} // $self->{identity};
    my %h = (%{ $o{headers} || {} });
    $h{'Content-Type'} = $o{content_type} if $o{content_type};
    $h{'Content-Type'} //= 'application/x-apple-aspen-mdm';

    if ($transport ne 'mtls' && !exists $h{'Mdm-Signature'}) {
        $h{'Mdm-Signature'} = $o{signature}
                              // $self->mdm_signature($body, identity => $id);
    }

    my %req = (body => $body, headers => \%h,
               port => $o{port} // $self->{port},
               https => $o{https} // 1);
    if ($transport ne 'signature' && !$o{no_cert} && $req{https}) {
        $req{cert} = $id->{cert};
        $req{key} = $id->{key};
    }
    $req{host} = 'localhost' if $req{https};

    my $r = $t->http(PUT => $o{url} // $self->{url}, %req);
    $r->{sent} = $body;
    if ($r->{status} == 200 && length $r->{body}
        && ($r->{body} =~ /^\s*</ || $r->{body} =~ /^bplist/))
    {
        $r->{plist} = parse_plist($r->{body}, t => $t);
        $r->{command} = $r->{plist} if ref $r->{plist} eq 'HASH'
                                       && $r->{plist}{CommandUUID};
    }
    return $r;
}

1;
