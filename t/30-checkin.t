#!/usr/bin/perl
# Check-in messages and device identity: nginx -t, Authenticate /
# TokenUpdate / CheckOut / bootstrap tokens / UserAuthenticate /
# DeclarativeManagement / GetToken, mTLS, the grace window through
# error_page 495, Mdm-Signature, a certificate forwarded by a trusted load
# balancer, revocation, binding mismatches, bad input, storage down, and
# never a 401.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use MIME::Base64 qw(encode_base64);
use MDM::Test;
use MDM::Device;

my $t = MDM::Test->new(name => 'checkin')->plan_skip_unless_module;

$t->start_postgres;
$t->start_redis;

my $srv = $t->tls_server_cert;
my $ca = $t->make_ca(name => 'scep-ca');
my $other_ca = $t->make_ca(name => 'other-ca');

my $conf = <<"EOF";
    mdm_postgres "%%PG%% sslmode=disable";
    mdm_redis %%REDIS%%;
    mdm_helper_path %%TESTDIR%%/helper;
    mdm_checkin_last_seen_interval 200ms;

    client_max_body_size 256k;
    client_body_buffer_size 256k;

    server {
        listen 127.0.0.1:%%PORT_0%% ssl;
        server_name localhost;

        ssl_certificate $srv->{cert};
        ssl_certificate_key $srv->{key};
        ssl_verify_client optional_no_ca;

        mdm_checkin_ca $ca->{cert};
        mdm_checkin_grace 7d;

        # nginx refuses an expired client certificate itself (495): the
        # module decides, within the grace window
        error_page 495 = \@mdm_checkin;

        location = /mdm/apple/mdm { mdm_checkin; }
        location = /mdm/apple/checkin { mdm_checkin; }
        location \@mdm_checkin { mdm_checkin; }

        location = /signed { mdm_checkin; mdm_checkin_signature on; }
        location = /digest {
            mdm_checkin;
            mdm_checkin_user_authenticate digest;
        }
    }

    # behind a TLS-terminating load balancer
    server {
        listen 127.0.0.1:%%PORT_1%%;

        mdm_checkin_ca $ca->{cert};

        location = /lb/signed { mdm_checkin; mdm_checkin_signature require; }
        location = /lb/forwarded {
            mdm_checkin;
            mdm_checkin_forwarded_header Client-Cert;
            mdm_checkin_trusted_proxy 127.0.0.0/8;
        }
        location = /lb/untrusted {
            mdm_checkin;
            mdm_checkin_forwarded_header Client-Cert;
            mdm_checkin_trusted_proxy 10.0.0.0/8;
        }
    }
EOF

###########################################################################
# nginx -t

my ($st, $out);

sub conf_with {
    my ($from, $to) = @_;
    my $c = $conf;
    $c =~ s/\Q$from\E/$to/ or die "no $from in the configuration\n";
    return $c;
}

$t->write_conf(conf_with("mdm_checkin_ca $ca->{cert};\n"
                         . "        mdm_checkin_grace", 'mdm_checkin_grace'));
($st, $out) = $t->nginx_test;
isnt($st, 0, 'nginx -t: mdm_checkin without mdm_checkin_ca fails');
like($out, qr/"mdm_checkin" needs .*mdm_checkin_ca/, 'and says what to add');

$t->write_conf(conf_with('proxy 10.0.0.0/8', 'proxy 10.0.0.x'));
($st, $out) = $t->nginx_test;
isnt($st, 0, 'nginx -t: a bad trusted proxy fails');
like($out, qr/invalid address or network "10\.0\.0\.x"/, 'named');

$t->write_conf(conf_with("mdm_checkin_ca $ca->{cert};",
                         'mdm_checkin_ca /nonexistent.pem;'));
($st, $out) = $t->nginx_test;
isnt($st, 0, 'nginx -t: a missing CA file fails');
like($out, qr/nonexistent\.pem/, 'naming the file');

$t->write_conf(conf_with('signature require', 'signature sometimes'));
($st, $out) = $t->nginx_test;
isnt($st, 0, 'nginx -t: a bad mdm_checkin_signature value fails');

$t->write_conf(conf_with('mdm_checkin_trusted_proxy 127.0.0.0/8;', ''));
($st, $out) = $t->nginx_test;
isnt($st, 0, 'nginx -t: a forwarded header without trusted proxies fails');
like($out, qr/needs "mdm_checkin_trusted_proxy"/, 'and says why');

$t->write_conf($conf);
($st, $out) = $t->nginx_test;
is($st, 0, 'nginx -t accepts the configuration') or diag $out;

$t->run;
my $started = $t->log_mark;

$t->wait_for(sub {
    ($t->psql("SELECT count(*) FROM pg_proc "
              . "WHERE proname = 'mdm_command_report'"))[0] == 1
}, what => 'the helper to apply 005_checkin.sql');

my @statuses;       # every status the devices got: never 401
sub seen { push @statuses, $_[0]{status}; $_[0] }

###########################################################################
# A Mac: Authenticate, TokenUpdate, CheckOut over mTLS

my $mac = MDM::Device->new($t, ca => $ca, kind => 'mac');
my $id = $mac->id;

my $r = seen($mac->authenticate);
is($r->{status}, 200, 'Authenticate: 200');
is($r->{body}, '', 'with an empty body');

is($t->psql("SELECT channel, enrollment_type, serial_number, model, "
            . "topic, enabled FROM mdm_enrollments WHERE id = '$id'"),
   "device|Device|" . $mac->serial . "|Mac14,2|" . $mac->topic . "|f",
   'the device is stored, disabled until TokenUpdate');
is($t->psql("SELECT encode(sha256, 'hex') FROM mdm_cert_bindings "
            . "WHERE enrollment_id = '$id'"),
   $mac->sha256, 'its certificate is bound to it');

$r = seen($mac->token_update(unlock_token => 'UNLOCK'));
is($r->{status}, 200, 'TokenUpdate: 200');
is($t->psql("SELECT enabled, token_update_tally, encode(push_token, 'hex'), "
            . "push_magic, unlock_token = 'UNLOCK'::bytea, "
            . "awaiting_configuration FROM mdm_enrollments "
            . "WHERE id = '$id'"),
   't|1|' . unpack('H*', $mac->token) . '|' . $mac->push_magic . '|t|f',
   'token, PushMagic, UnlockToken stored, enabled, counted');

$r = seen($mac->token_update);
is($t->psql("SELECT token_update_tally FROM mdm_enrollments "
            . "WHERE id = '$id'"), 2, 'a second TokenUpdate is counted');

# APNs said the token is bad (007_push.sql): a TokenUpdate clears it
$t->psql("UPDATE mdm_enrollments SET push_token_invalid_at = now() "
         . "WHERE id = '$id'");
seen($mac->token_update);
is($t->psql("SELECT push_token_invalid_at IS NULL FROM mdm_enrollments "
            . "WHERE id = '$id'"), 't',
   'TokenUpdate clears push_token_invalid_at');

# the user channel
my $user = $mac->user_channel;
$r = seen($mac->token_update(user => $user));
is($r->{status}, 200, 'user channel TokenUpdate: 200');
is($t->psql("SELECT channel, device_id, enrollment_type, user_short_name, "
            . "enabled FROM mdm_enrollments WHERE id = '$user->{id}'"),
   "user|$id|User|ann|t", 'the user channel is its own enrollment');

# bootstrap token
$r = seen($mac->get_bootstrap_token);
is($r->{status}, 200, 'GetBootstrapToken with none stored: 200');
is($r->{body}, '', 'and an empty body');

$r = seen($mac->set_bootstrap_token("\x00bootstrap\xff"));
is($r->{status}, 200, 'SetBootstrapToken: 200');
$r = seen($mac->get_bootstrap_token);
is($r->{status}, 200, 'GetBootstrapToken: 200');
is(ref $r->{plist}{BootstrapToken} && $r->{plist}{BootstrapToken}->bytes,
   "\x00bootstrap\xff", 'returns the stored token');
seen($mac->set_bootstrap_token(undef));
is($t->psql("SELECT bootstrap_token IS NULL FROM mdm_enrollments "
            . "WHERE id = '$id'"), 't', 'an absent token deletes it');

# UserAuthenticate: declined by default, digest by directive
$r = seen($mac->user_authenticate($mac->user_channel(short_name => 'bob')));
is($r->{status}, 410, 'UserAuthenticate: 410 by default');

$r = seen($mac->user_authenticate($mac->user_channel(short_name => 'bob'),
                                  url => '/digest'));
is($r->{status}, 200, 'UserAuthenticate with digest: 200');
is_deeply($r->{plist}, { DigestChallenge => '' },
          'a zero-length DigestChallenge');
$r = seen($mac->user_authenticate($mac->user_channel(short_name => 'bob'),
                                  url => '/digest',
                                  digest_response => 'response'));
is($r->{status}, 200, 'the second message: 200');
is($r->{body}, '', 'with an empty body');

# DeclarativeManagement and GetToken: no handler here
$r = seen($mac->declarative_management('tokens'));
is($r->{status}, 501, 'DeclarativeManagement without a DDM component: 501');
like($r->{body}, qr/DeclarativeManagement is not served here/,
     'a clear error');
$r = seen($mac->checkin({ MessageType => 'GetToken', UDID => $id,
                          TokenServiceType => 'com.apple.maid' }));
is($r->{status}, 501, 'GetToken without a handler: 501');
like($r->{body}, qr/GetToken/, 'a clear error');

# the separate CheckInURL location works too
$r = seen($mac->token_update(url => '/mdm/apple/checkin'));
is($r->{status}, 200, 'a check-in on the CheckInURL location');

# events and last_seen through Redis
my @ev = split /\n/, $t->redis_cli('XRANGE', 'mdm:events', '-', '+');
ok(scalar(grep { $_ eq 'Authenticate' } @ev), 'events: Authenticate');
ok(scalar(grep { $_ eq 'TokenUpdate' } @ev), 'events: TokenUpdate');
$t->wait_for(sub {
    $t->psql("SELECT last_seen_at IS NOT NULL FROM mdm_enrollments "
             . "WHERE id = '$id'") eq 't'
}, what => 'the helper to flush last_seen');
pass('last_seen flushed from Redis to PostgreSQL by the helper');

# CheckOut
$r = seen($mac->check_out);
is($r->{status}, 200, 'CheckOut: 200');
is($t->psql("SELECT string_agg(enabled::text, ',' ORDER BY id) "
            . "FROM mdm_enrollments WHERE device_id = '$id'"),
   'false,false', 'CheckOut disables the device and its user channel');

###########################################################################
# Identity

my $mark = $t->log_mark;

# no certificate at all
$r = seen($mac->authenticate(no_cert => 1));
is($r->{status}, 400, 'no certificate: 400');
like($r->{body}, qr/no device certificate/, 'says why');

# a certificate of another CA
my $stranger = MDM::Device->new($t, ca => $other_ca, kind => 'iphone');
$r = seen($stranger->authenticate);
is($r->{status}, 400, 'another CA: 400');
is($t->psql("SELECT count(*) FROM mdm_enrollments WHERE id = '"
            . $stranger->id . "'"), 0, 'nothing stored');

# expired within the grace window: nginx says 495, error_page routes it
my $late = MDM::Device->new($t, kind => 'iphone',
    identity => $t->make_cert(ca => $ca, ext => 'clientAuth', cn => 'late',
                              not_before => '-30d', not_after => '-2d'));
$r = seen($late->authenticate);
is($r->{status}, 200, 'expired 2 days ago, grace 7d: 200 (error_page 495)');
$r = seen($late->token_update);
is($r->{status}, 200, 'and its TokenUpdate');

my $dead = MDM::Device->new($t, kind => 'iphone',
    identity => $t->make_cert(ca => $ca, ext => 'clientAuth', cn => 'dead',
                              not_before => '-60d', not_after => '-8d'));
$r = seen($dead->authenticate);
is($r->{status}, 400, 'expired beyond the grace: 400');

my $early = MDM::Device->new($t, kind => 'iphone',
    identity => $t->make_cert(ca => $ca, ext => 'clientAuth', cn => 'early',
                              not_before => '+1d', not_after => '+30d'));
$r = seen($early->authenticate);
is($r->{status}, 400, 'not yet valid: 400');

my $server_eku = MDM::Device->new($t, kind => 'iphone',
    identity => $t->make_cert(ca => $ca, ext => 'serverAuth', cn => 'srv'));
$r = seen($server_eku->authenticate);
is($r->{status}, 400, 'a certificate without clientAuth: 400');

# revoked
my $revoked = MDM::Device->new($t, ca => $ca, kind => 'iphone');
is(seen($revoked->authenticate)->{status}, 200, 'a device enrolls');
$t->psql("INSERT INTO mdm_certificates (serial, sha256, subject, "
         . "not_before, not_after, der, source, revoked_at) VALUES "
         . "(nextval('mdm_certificate_serial'), '\\x" . $revoked->sha256
         . "', 'CN=x', now(), now() + interval '1 year', '\\x00', "
         . "'static', now())");
$r = seen($revoked->token_update);
is($r->{status}, 400, 'its certificate revoked: 400');
like($r->{body}, qr/revoked/, 'says why');
is($t->psql("SELECT token_update_tally FROM mdm_enrollments WHERE id = '"
            . $revoked->id . "'"), 0, 'nothing written');

# binding: a certificate serves one enrollment
my $a = MDM::Device->new($t, ca => $ca, kind => 'iphone');
my $b = MDM::Device->new($t, ca => $ca, kind => 'iphone');
seen($a->authenticate);
seen($b->authenticate);

my $thief = MDM::Device->new($t, kind => 'iphone', udid => $a->udid,
                             identity => $b->identity);
$r = seen($thief->token_update);
is($r->{status}, 500, "another device's UDID with my certificate: 500");
like($r->{body}, qr/bound to another enrollment/, 'says why');
$r = seen($thief->authenticate);
is($r->{status}, 500, 'Authenticate with a certificate bound elsewhere: 500');
is($t->psql("SELECT token_update_tally FROM mdm_enrollments WHERE id = '"
            . $a->udid . "'"), 0, 'nothing written');

my $newcomer = MDM::Device->new($t, ca => $ca, kind => 'iphone');
$r = seen($newcomer->token_update);
is($r->{status}, 500, 'TokenUpdate before any Authenticate: 500');
like($r->{body}, qr/bound to no enrollment/, 'says why');

# a renewed certificate: a new Authenticate binds it too
my $renewed = MDM::Device->new($t, ca => $ca, kind => 'iphone',
                               udid => $a->udid);
is(seen($renewed->authenticate)->{status}, 200,
   'Authenticate with a renewed certificate');
is(seen($renewed->token_update)->{status}, 200, 'the new one works');
is(seen($a->token_update)->{status}, 200, 'the old one still works');
is($t->psql("SELECT count(*) FROM mdm_cert_bindings WHERE enrollment_id = '"
            . $a->udid . "'"), 2, 'two bindings for one enrollment');

# a certificate issued for a challenge minted for another device
my $minted = MDM::Device->new($t, ca => $ca, kind => 'iphone');
$t->psql("INSERT INTO mdm_challenges (id, digest, purpose, udid, "
         . "expires_at) VALUES (4242, '\\x01', 'enroll', 'SOMEONE-ELSE', "
         . "now() + interval '1 hour'); INSERT INTO mdm_certificates "
         . "(serial, sha256, subject, not_before, not_after, der, source, "
         . "challenge_id) VALUES (nextval('mdm_certificate_serial'), '\\x"
         . $minted->sha256 . "', 'CN=x', now(), now() + interval '1 year', "
         . "'\\x00', 'challenge', 4242)");
$r = seen($minted->authenticate);
is($r->{status}, 500, "a certificate minted for another UDID: 500");

# Mdm-Signature (SignMessage) on the TLS server, and behind a load balancer
my $signer = MDM::Device->new($t, ca => $ca, kind => 'iphone',
                              transport => 'both', url => '/signed');
is(seen($signer->authenticate)->{status}, 200,
   'Mdm-Signature and mTLS together');
$r = seen($signer->token_update(identity => $a->identity,
                                signature => $signer->mdm_signature('x')));
is($r->{status}, 400, 'a signature over another body: 400');
like($r->{body}, qr/bad Mdm-Signature/, 'says why');

$r = seen($signer->token_update(signature => $signer->mdm_signature('x',
                                           identity => $b->identity)));
is($r->{status}, 400, 'signed by another certificate than the TLS one');

my $lb = MDM::Device->new($t, kind => 'iphone', transport => 'signature',
                          port => 1, url => '/lb/signed',
                          identity => $signer->identity,
                          udid => $signer->udid);
is(seen($lb->token_update(https => 0))->{status}, 200,
   'behind a load balancer, Mdm-Signature alone: 200');
$r = seen($lb->token_update(https => 0, transport => 'mtls'));
is($r->{status}, 400, 'mdm_checkin_signature require without one: 400');
$r = seen($lb->token_update(https => 0, signature => 'bm90IGEgY21z'));
is($r->{status}, 400, 'garbage in Mdm-Signature: 400');

# a certificate forwarded by a trusted load balancer (RFC 9440)
my $pem = $t->read_file($signer->cert);
my $fwd = ':' . encode_base64($t->cert_der($signer->cert), '') . ':';
$r = seen($lb->token_update(https => 0, transport => 'mtls',
                            url => '/lb/forwarded',
                            headers => { 'Client-Cert' => $fwd }));
is($r->{status}, 200, 'Client-Cert from a trusted proxy: 200');

(my $escaped = $pem) =~ s/([^A-Za-z0-9+\/=-])/sprintf '%%%02X', ord $1/ge;
$r = seen($lb->token_update(https => 0, transport => 'mtls',
                            url => '/lb/forwarded',
                            headers => { 'Client-Cert' => $escaped }));
is($r->{status}, 200, 'an $ssl_client_escaped_cert value works too');

$r = seen($lb->token_update(https => 0, transport => 'mtls',
                            url => '/lb/untrusted',
                            headers => { 'Client-Cert' => $fwd }));
is($r->{status}, 400, 'Client-Cert from an untrusted address: 400');
like($t->error_log(from => $mark), qr/untrusted address/,
     'the log says the header was ignored');

###########################################################################
# Bad input: one line each, nothing written

my $good = MDM::Device->new($t, ca => $ca, kind => 'iphone');
seen($good->authenticate);
my $before = $t->psql("SELECT updated_at FROM mdm_enrollments "
                      . "WHERE id = '" . $good->id . "'");

my %bad = (
    'garbage bytes'        => "\x00\x01garbage\xff" x 10,
    'a truncated plist'    => substr(MDM::Device::plist_xml(
                                  $good->token_update_plist), 0, 200),
    'no MessageType'       => MDM::Device::plist_xml({ UDID => $good->id,
                                                       Topic => 'x' }),
    'an unknown MessageType' => MDM::Device::plist_xml({
                                  MessageType => 'Frobnicate',
                                  UDID => $good->id }),
    'TokenUpdate without Token' => MDM::Device::plist_xml({
                                  MessageType => 'TokenUpdate',
                                  UDID => $good->id, Topic => 'x',
                                  PushMagic => 'y' }),
    'a binary plist with garbage' => "bplist00" . ("\xff" x 40),
);

for my $what (sort keys %bad) {
    my $m = $t->log_mark;
    my $r = seen($good->checkin($bad{$what}));
    is($r->{status}, 400, "$what: 400");
    my @lines = grep { /mdm check-in/ } split /\n/,
                $t->error_log(from => $m);
    is(scalar @lines, 1, "$what: one log line") or diag explain \@lines;
}

$r = seen($good->checkin('A' x (300 * 1024)));
is($r->{status}, 413, 'a body over client_max_body_size: 413 (nginx)');

$r = seen($good->checkin($good->token_update_plist, binary => 1));
is($r->{status}, 200, 'a binary plist check-in is fine');

is($t->psql("SELECT token_update_tally FROM mdm_enrollments WHERE id = '"
            . $good->id . "'"), 1, 'only the good TokenUpdate counted');

$r = $t->http(GET => '/mdm/apple/mdm', https => 1, host => 'localhost',
              cert => $good->cert, key => $good->key);
is($r->{status}, 405, 'GET: 405');

unlike($t->error_log, qr/PushMagic|\Q${\ $mac->push_magic }\E/,
       'no PushMagic in the log');

###########################################################################
# Storage down: 503 with Retry-After, and Redis down changes nothing

$t->stop_redis;
$r = seen($good->token_update);
is($r->{status}, 200, 'Redis down: check-ins go on');
$t->start_redis;

$t->stop_postgres;
$r = seen($good->token_update);
is($r->{status}, 503, 'PostgreSQL down: 503');
ok(defined $r->{headers}{'retry-after'}, 'with Retry-After');
$t->start_postgres;
$t->wait_for(sub { $good->token_update->{status} == 200 },
             what => 'check-ins to work again');

###########################################################################

is(scalar(grep { $_ == 401 } @statuses), 0,
   'never 401 (' . scalar(@statuses) . ' answers)');
is_deeply([$t->log_alerts(from => $started)], [], 'no alerts');

done_testing;
