#!/usr/bin/perl
# Over-the-air enrollment, the three phases of the Profile Service:
#   1. GET the signed Profile Service profile (behind auth_basic here: the
#      user is recorded with the one-time token);
#   2. POST the real phase-2 capture (signed by a real Apple device
#      identity; its CHALLENGE, zentral's, is inserted as a valid token):
#      a SCEP-only profile with a challenge bound to the device;
#   3. POST the same attributes signed with a throw-away identity of our
#      SCEP CA (made here, recorded as SCEP records what it issues): the
#      full enrollment profile.
# And everything that must be refused with nothing recorded: unknown,
# used and expired tokens, forged and truncated bodies, non-Apple signers,
# identities we did not issue for this device, expired or revoked ones,
# missing attributes.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use Digest::SHA qw(sha256_hex);
use JSON::PP ();
use MDM::Test;
use MDM::Enroll qw(parse_plist plist_xml);

my $t = MDM::Test->new(name => 'enroll-ota')->plan_skip_unless_module;

$t->start_postgres;
$t->start_redis;

my $e = MDM::Enroll->new($t);

my $htpasswd = $t->run_command([ 'openssl', 'passwd', '-apr1', 'secret' ]);
$t->write_file('htpasswd', "bob:$htpasswd->{stdout}");

$t->write_conf(<<'EOF' . $e->http_conf . <<'EOF2');
    mdm_postgres "%%PG%% sslmode=disable";
    mdm_redis %%REDIS%%;
    mdm_helper_path %%TESTDIR%%/helper;
EOF
    server {
        listen 127.0.0.1:%%PORT_0%%;

        location = /api/latest/fleet/enrollment_profiles/ota {
            auth_basic "enrollment";
            auth_basic_user_file %%TESTDIR%%/htpasswd;
            mdm_enroll ota_profile;
            mdm_enroll_user $remote_user;
        }

        location = /api/latest/fleet/ota_enrollment {
            mdm_enroll ota;
        }
    }
EOF2

$t->run;

$t->wait_for(sub {
    $t->psql("SELECT to_regclass('mdm_enroll_tokens') IS NOT NULL") eq 't'
}, what => 'the helper to apply the enrollment schema');

my $ota = '/api/latest/fleet/ota_enrollment';
my %aspen = ('Content-Type' => 'application/pkcs7-signature');

sub counts {
    return $t->psql(
        "SELECT (SELECT count(*) FROM mdm_challenges) || '/' ||"
        . " (SELECT count(*) FROM mdm_enroll_devices) || '/' ||"
        . " (SELECT count(*) FROM mdm_enroll_tokens WHERE used_at IS NULL)");
}

sub refused {
    my ($what, $status, $message, @req) = @_;
    my $before = counts();
    my $m = $t->log_mark;
    my $res = $t->http(@req);
    is($res->{status}, $status, "$what: $status");
    my $j = eval { JSON::PP->new->decode($res->{body}) } // {};
    like($j->{message} // '', $message, "$what: the message the device shows");
    is(counts(), $before, "$what: nothing recorded");
    like($t->error_log(from => $m), qr/\[info\].*mdm enroll/,
         "$what: one info line in the log");
    return $res;
}

###########################################################################
# phase 1: the Profile Service profile

my $r = $t->http(GET => '/api/latest/fleet/enrollment_profiles/ota');
is($r->{status}, 401, 'phase 1 is behind nginx\'s authentication');

$r = $t->http(GET => 'http://bob:secret@127.0.0.1:' . $t->port(0)
                     . '/api/latest/fleet/enrollment_profiles/ota');
is($r->{status}, 200, 'phase 1: 200');
is($r->{headers}{'content-type'}, 'application/x-apple-aspen-config',
   'application/x-apple-aspen-config');
like($r->{headers}{'content-disposition'} // '',
     qr/^attachment; filename="enroll\.mobileconfig"$/,
     'downloaded as enroll.mobileconfig');

my ($ok, $xml, $err) = $e->verify_profile($r->{body});
ok($ok, 'openssl cms -verify accepts the Profile Service profile')
    or diag $err;

my $p = parse_plist($xml);
is($p->{PayloadType}, 'Profile Service', 'PayloadType Profile Service');
is($p->{PayloadIdentifier}, 'org.nginx-mdm.enrollment.ota', 'identifier');
is($p->{PayloadContent}{URL},
   'https://mdm.example.org/api/latest/fleet/ota_enrollment',
   'URL: the OTA endpoint');
is_deeply($p->{PayloadContent}{DeviceAttributes},
          [ qw(UDID VERSION PRODUCT SERIAL MEID IMEI) ], 'DeviceAttributes');
my $token = $p->{PayloadContent}{Challenge};
like($token, qr/^[0-9a-f]{48}$/, 'a one-time enrollment token');

is($t->psql("SELECT sso_user || '|' || (used_at IS NULL) || '|' ||"
            . " (expires_at > now() + interval '59 minutes')"
            . " FROM mdm_enroll_tokens"
            . " WHERE digest = decode('" . sha256_hex($token) . "', 'hex')"),
   'bob|true|true',
   'stored as its digest with the user, unused, valid for an hour');

my $r2 = $t->http(GET => 'http://bob:secret@127.0.0.1:' . $t->port(0)
                      . '/api/latest/fleet/enrollment_profiles/ota');
my (undef, $xml2) = $e->verify_profile($r2->{body});
my $p2 = parse_plist($xml2);
isnt($p2->{PayloadContent}{Challenge}, $token, 'a new token each time');
is($p2->{PayloadUUID}, $p->{PayloadUUID}, 'the same PayloadUUID');

###########################################################################
# phase 2: the real capture

my $capture = $e->capture;
my $content = $e->capture_content;
my ($udid, $serial) = @$content{qw(UDID SERIAL)};
my $capture_token = sha256_hex($content->{CHALLENGE});

my $plain = $t->run_command([ 'openssl', 'cms', '-verify', '-noverify',
                              '-inform', 'DER', '-in',
                              $t->write_file('tmp/c.der', $capture) ]);
my $capture_xml = $plain->{stdout};

refused('phase 2 with a token never handed out', 403,
        qr/invalid, has expired or was already used/,
        POST => $ota, headers => \%aspen, body => $capture);

$t->psql("INSERT INTO mdm_enroll_tokens (digest, sso_user, expires_at)"
         . " VALUES (decode('$capture_token', 'hex'), 'carol',"
         . " now() - interval '1 second')");

refused('phase 2 with an expired token', 403, qr/has expired/,
        POST => $ota, headers => \%aspen, body => $capture);

$t->psql("UPDATE mdm_enroll_tokens SET expires_at = now() + interval '1 hour'"
         . " WHERE digest = decode('$capture_token', 'hex')");

my $stranger_ca = $t->make_ca(name => 'stranger-ca');
my $stranger = $t->make_cert(ca => $stranger_ca, cn => $udid,
                             name => 'stranger');

refused('phase 2 content signed by a non-Apple certificate', 403,
        qr/could not be verified as an Apple device/,
        POST => $ota, headers => \%aspen,
        body => $e->sign($capture_xml, $stranger->{cert}, $stranger->{key},
                         md => 'sha1', chain => $e->{apple_chain}));

(my $forged = $capture) =~ s/\Q$serial\E/C02FORGED1/ or die;
refused('phase 2 forged (serial changed)', 403, qr/not correctly signed/,
        POST => $ota, headers => \%aspen, body => $forged);

refused('phase 2 truncated', 400, qr/malformed/,
        POST => $ota, headers => \%aspen,
        body => substr($capture, 0, 1000));

refused('phase 2 empty', 400, qr/malformed/,
        POST => $ota, headers => \%aspen, body => '');

is($t->http(GET => $ota)->{status}, 405, 'GET on the OTA endpoint: 405');

my $mark = $t->log_mark;
$r = $t->http(POST => $ota, headers => \%aspen, body => $capture);
is($r->{status}, 200, 'phase 2 with the real capture: 200');
is($r->{headers}{'content-type'}, 'application/x-apple-aspen-config',
   'a profile');
($ok, $xml, $err) = $e->verify_profile($r->{body});
ok($ok, 'signed') or diag $err;

$p = parse_plist($xml);
is(scalar @{ $p->{PayloadContent} }, 1, 'one payload');
my $scep = $p->{PayloadContent}[0];
is($scep->{PayloadType}, 'com.apple.security.scep', 'a SCEP payload alone');
is($p->{PayloadIdentifier}, 'org.nginx-mdm.enrollment.ota-identity',
   'its own identifier (not the enrollment profile\'s)');
my $c2 = $scep->{PayloadContent}{Challenge};
like($c2, qr/^[0-9a-f]{48}$/, 'with a challenge');

my ($challenge_id, $row) = split /\|/, $t->psql(
    "SELECT c.id, c.purpose || ',' || c.udid || ',' || c.serial_number"
    . " || ',' || c.sso_user || ',' || (c.enroll_token_id = t.id)"
    . " FROM mdm_challenges c, mdm_enroll_tokens t"
    . " WHERE c.digest = decode('" . sha256_hex($c2) . "', 'hex')"
    . " AND t.digest = decode('$capture_token', 'hex')"), 2;
is($row, "ota_scep,$udid,$serial,carol,true",
   'challenge: purpose ota_scep, bound to the device, the token\'s user');
is($t->psql("SELECT (used_at IS NOT NULL) || ',' || used_udid || ','"
            . " || used_serial FROM mdm_enroll_tokens"
            . " WHERE digest = decode('$capture_token', 'hex')"),
   "true,$udid,$serial", 'the token is used up, by this device');
is($t->psql("SELECT source || ',' || sso_user FROM mdm_enroll_devices"
            . " WHERE udid = '$udid'"), 'ota,carol', 'the device recorded');
unlike($t->error_log(from => $mark), qr/$content->{CHALLENGE}|$c2/,
       'neither token nor challenge in the log');

refused('phase 2 replayed: the token was used', 403,
        qr/already used/, POST => $ota, headers => \%aspen, body => $capture);

###########################################################################
# phase 3: signed with the throw-away identity our SCEP CA issued

sub record_identity {
    my ($cert, $challenge) = @_;
    my $der = unpack 'H*', $t->cert_der($cert->{cert});
    my $sha = $t->cert_sha256($cert->{cert});
    $t->psql("INSERT INTO mdm_certificates (serial, sha256, subject,"
             . " not_before, not_after, der, source, challenge_id)"
             . " VALUES (nextval('mdm_certificate_serial'),"
             . " decode('$sha', 'hex'), 'CN=$cert->{name}',"
             . " now() - interval '1 hour', now() + interval '1 year',"
             . " decode('$der', 'hex'), 'challenge', $challenge)");
    return $sha;
}

my $identity = $t->make_cert(ca => $e->{scep_ca}, cn => $udid,
                             ext => 'clientAuth', name => 'throwaway');
my $identity_sha = record_identity($identity, $challenge_id);

sub phase3 {
    my ($cert, $body) = @_;
    return $e->sign($body // $capture_xml, $cert->{cert}, $cert->{key});
}

$mark = $t->log_mark;
$r = $t->http(POST => $ota, headers => \%aspen, body => phase3($identity));
is($r->{status}, 200, 'phase 3: 200');
($ok, $xml, $err) = $e->verify_profile($r->{body});
ok($ok, 'the enrollment profile, signed') or diag $err;
$p = parse_plist($xml);
is($p->{PayloadIdentifier}, 'org.nginx-mdm.enrollment',
   'the enrollment profile');
is_deeply([ sort map { $_->{PayloadType} } @{ $p->{PayloadContent} } ],
          [ 'com.apple.mdm', 'com.apple.security.scep' ],
          'SCEP and MDM payloads');
my ($mdm) = grep { $_->{PayloadType} eq 'com.apple.mdm' }
            @{ $p->{PayloadContent} };
($scep) = grep { $_->{PayloadType} eq 'com.apple.security.scep' }
          @{ $p->{PayloadContent} };
is($mdm->{Topic}, $e->topic, 'Topic from the push certificate');
my $c3 = $scep->{PayloadContent}{Challenge};
isnt($c3, $c2, 'a new challenge');

is($t->psql("SELECT c.purpose || ',' || c.udid || ',' || c.sso_user"
            . " || ',' || (c.enroll_token_id = t.id)"
            . " FROM mdm_challenges c, mdm_enroll_tokens t"
            . " WHERE c.digest = decode('" . sha256_hex($c3) . "', 'hex')"
            . " AND t.digest = decode('$capture_token', 'hex')"),
   "ota,$udid,carol,true",
   'challenge: purpose ota, bound to the device, user and token carried');
like($t->error_log(from => $mark),
     qr/mdm enroll ota: profile for device "$udid" serial "$serial" user "carol"/,
     'logged');

# phase 3 refusals

my $unknown = $t->make_cert(ca => $e->{scep_ca}, cn => $udid,
                            ext => 'clientAuth', name => 'unknown');
refused('phase 3 with an identity SCEP never issued', 403,
        qr/enrollment identity of this device is not valid/,
        POST => $ota, headers => \%aspen, body => phase3($unknown));

my $other_challenge = $t->psql(
    "INSERT INTO mdm_challenges (digest, purpose, udid, expires_at)"
    . " VALUES (decode('" . sha256_hex('other') . "', 'hex'), 'ota_scep',"
    . " 'OTHER-DEVICE', now() + interval '1 hour') RETURNING id");
my $others = $t->make_cert(ca => $e->{scep_ca}, cn => 'OTHER-DEVICE',
                           ext => 'clientAuth', name => 'others');
record_identity($others, $other_challenge);
my $m2 = $t->log_mark;
refused('phase 3 with another device\'s identity', 403,
        qr/identity of this device is not valid/,
        POST => $ota, headers => \%aspen, body => phase3($others));
like($t->error_log(from => $m2), qr/was issued for another device/,
     'logged as another device\'s');

$t->psql("UPDATE mdm_certificates SET revoked_at = now()"
         . " WHERE sha256 = decode('$identity_sha', 'hex')");
refused('phase 3 with a revoked identity', 403,
        qr/identity of this device is not valid/,
        POST => $ota, headers => \%aspen, body => phase3($identity));
$t->psql("UPDATE mdm_certificates SET revoked_at = NULL"
         . " WHERE sha256 = decode('$identity_sha', 'hex')");

my $expired = $t->make_cert(ca => $e->{scep_ca}, cn => $udid,
                            ext => 'clientAuth', name => 'expired',
                            not_before => '-10d', not_after => '-1d');
record_identity($expired, $challenge_id);
refused('phase 3 with an expired identity', 403,
        qr/identity of this device is not valid/,
        POST => $ota, headers => \%aspen, body => phase3($expired));

refused('phase 3 signed by a stranger', 403,
        qr/could not be verified/,
        POST => $ota, headers => \%aspen, body => phase3($stranger));

refused('phase 3 without SERIAL', 400, qr/UDID and serial number/,
        POST => $ota, headers => \%aspen,
        body => phase3($identity, plist_xml({ UDID => $udid,
                                              PRODUCT => 'VirtualMac2,1' })));

refused('phase 3 content that is no plist', 400, qr/malformed/,
        POST => $ota, headers => \%aspen,
        body => phase3($identity, "UDID=$udid\n"));

# the good identity still works after all that

is($t->http(POST => $ota, headers => \%aspen,
            body => phase3($identity))->{status}, 200,
   'phase 3 again with the good identity: 200');

is_deeply([ $t->log_alerts ], [], 'no alerts in the error log');

done_testing;
