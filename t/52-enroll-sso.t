#!/usr/bin/perl
# Authenticated enrollment (ADE configuration_web_url): nginx authenticates
# with auth_request against a small local identity service (MDM::IdP),
# auth_request_set hands the user to mdm_enroll_user, and the module
# records the user with the challenge (and with the device when the web
# view sent x-apple-aspen-deviceinfo).  No session: the login redirect,
# nothing recorded.  A misconfigured user variable: 403, an error line.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use Digest::SHA qw(sha256_hex);
use JSON::PP ();
use MIME::Base64 qw(encode_base64);
use MDM::Test;
use MDM::Enroll qw(parse_plist);
use MDM::IdP;

my $t = MDM::Test->new(name => 'enroll-sso')->plan_skip_unless_module;

$t->start_postgres;
$t->start_redis;

my $e = MDM::Enroll->new($t);
my $idp = MDM::IdP->new($t, users => { alice => 'wonderland' });
my $idp_port = $idp->port;

$t->write_conf(<<'EOF' . $e->http_conf . <<"EOF2");
    mdm_postgres "%%PG%% sslmode=disable";
    mdm_redis %%REDIS%%;
    mdm_helper_path %%TESTDIR%%/helper;
EOF
    server {
        listen 127.0.0.1:%%PORT_0%%;

        location = /api/v1/fleet/sso {
            auth_request /_idp/auth;
            auth_request_set \$sso_user \$upstream_http_x_user;
            error_page 401 = \@login;

            mdm_enroll sso;
            mdm_enroll_user \$sso_user;
        }

        location = /_idp/auth {
            internal;
            proxy_pass http://127.0.0.1:$idp_port/auth;
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
            proxy_set_header X-Original-URI \$request_uri;
        }

        location \@login {
            return 302 http://127.0.0.1:$idp_port/login?rd=\$request_uri;
        }

        # a mistake: the user comes from a header nobody sets
        location = /misconfigured/sso {
            mdm_enroll sso;
            mdm_enroll_user \$http_x_nobody_sets_this;
        }
    }
EOF2

$t->run;
$idp->start;

$t->wait_for(sub {
    $t->psql("SELECT to_regclass('mdm_enroll_devices') IS NOT NULL") eq 't'
}, what => 'the helper to apply the enrollment schema');

sub counts {
    return $t->psql('SELECT (SELECT count(*) FROM mdm_challenges) || \'/\''
                    . ' || (SELECT count(*) FROM mdm_enroll_devices)');
}

my $capture = $e->capture;
my $content = $e->capture_content;
my $udid = $content->{UDID};
my $deviceinfo = encode_base64($capture, '');

###########################################################################
# not signed in: the login redirect, nothing recorded

my $counts = counts();

my $r = $t->http(GET => '/api/v1/fleet/sso',
                 headers => { 'x-apple-aspen-deviceinfo' => $deviceinfo });
is($r->{status}, 302, 'no session: redirected');
like($r->{headers}{location} // '',
     qr{^http://127\.0\.0\.1:$idp_port/login\?rd=/api/v1/fleet/sso$},
     'to the identity service\'s login');
is(counts(), $counts, 'nothing recorded');
ok((grep { $_ eq 'GET /auth 401 -' } $idp->requests),
   'the identity service was asked and said 401');

###########################################################################
# sign in at the identity service

$r = $t->http(GET => "http://127.0.0.1:$idp_port/login?user=alice"
                     . '&password=wrong&rd=/api/v1/fleet/sso');
is($r->{status}, 403, 'a wrong password is refused by the identity service');

$r = $t->http(GET => "http://127.0.0.1:$idp_port/login?user=alice"
                     . '&password=wonderland&rd=/api/v1/fleet/sso');
is($r->{status}, 302, 'signed in');
my ($session) = ($r->{headers}{'set-cookie'} // '') =~ /idp_session=(\w+)/;
ok($session, 'a session cookie');

###########################################################################
# signed in: the profile, the user recorded with the challenge and device

$r = $t->http(GET => '/api/v1/fleet/sso',
              headers => { Cookie => "idp_session=$session",
                           'x-apple-aspen-deviceinfo' => $deviceinfo });
is($r->{status}, 200, 'signed in, with device information: 200');
is($r->{headers}{'content-type'}, 'application/x-apple-aspen-config',
   'the enrollment profile');

my ($ok, $xml, $err) = $e->verify_profile($r->{body});
ok($ok, 'openssl cms -verify accepts it') or diag $err;
my $p = parse_plist($xml);
my ($scep) = grep { $_->{PayloadType} eq 'com.apple.security.scep' }
             @{ $p->{PayloadContent} };
my ($mdm) = grep { $_->{PayloadType} eq 'com.apple.mdm' }
            @{ $p->{PayloadContent} };
ok($scep && $mdm, 'SCEP and MDM payloads');

my $challenge = $scep->{PayloadContent}{Challenge};
is($t->psql("SELECT purpose || ',' || sso_user || ',' || udid || ','"
            . " || serial_number FROM mdm_challenges"
            . " WHERE digest = decode('" . sha256_hex($challenge) . "', 'hex')"),
   "sso,alice,$udid,$content->{SERIAL}",
   'challenge: purpose sso, the user, bound to the device');
is($t->psql("SELECT source || ',' || sso_user FROM mdm_enroll_devices"
            . " WHERE udid = '$udid'"), 'sso,alice',
   'the device recorded with the user');

# the join the admin API makes: certificate -> challenge -> user
$t->psql("INSERT INTO mdm_certificates (serial, sha256, subject, not_before,"
         . " not_after, der, source, challenge_id)"
         . " SELECT 1, '\\x01', 'CN=x', now(), now(), '\\x00', 'challenge', id"
         . " FROM mdm_challenges WHERE digest = decode('"
         . sha256_hex($challenge) . "', 'hex')");
is($t->psql("SELECT c.sso_user FROM mdm_certificates k"
            . " JOIN mdm_challenges c ON c.id = k.challenge_id"
            . " WHERE k.serial = 1"), 'alice',
   'an issued certificate leads to the user');

$r = $t->http(GET => '/api/v1/fleet/sso',
              headers => { Cookie => "idp_session=$session" });
is($r->{status}, 200, 'signed in, without device information: 200');
(undef, $xml) = $e->verify_profile($r->{body});
$p = parse_plist($xml);
$challenge = $p->{PayloadContent}[0]{PayloadContent}{Challenge};
is($t->psql("SELECT purpose || ',' || sso_user || ',' || (udid IS NULL)"
            . " FROM mdm_challenges"
            . " WHERE digest = decode('" . sha256_hex($challenge) . "', 'hex')"),
   'sso,alice,true', 'the user recorded, no device binding');

$r = $t->http(GET => '/api/v1/fleet/sso',
              headers => { Authorization => "Bearer $session" });
is($r->{status}, 200, 'a bearer token works as well');

my $arg = $deviceinfo;
$arg =~ s/([^A-Za-z0-9])/sprintf '%%%02X', ord $1/ge;
$r = $t->http(GET => "/api/v1/fleet/sso?deviceinfo=$arg",
              headers => { Cookie => "idp_session=$session" });
is($r->{status}, 200, 'device information kept as ?deviceinfo= across'
   . ' the login');

ok((grep { $_ eq 'GET /auth 200 alice' } $idp->requests),
   'the identity service said who');

###########################################################################
# signed in but the device information is forged: refused

$counts = counts();
(my $forged = $capture) =~ s/\Q$content->{SERIAL}\E/C02FORGED1/ or die;
$r = $t->http(GET => '/api/v1/fleet/sso',
              headers => { Cookie => "idp_session=$session",
                           'x-apple-aspen-deviceinfo' =>
                               encode_base64($forged, '') });
is($r->{status}, 403, 'forged device information: 403');
like(eval { JSON::PP->new->decode($r->{body})->{message} } // '',
     qr/not correctly signed/, 'with the message');
is(counts(), $counts, 'nothing recorded');

###########################################################################
# signed out, and the misconfigured location

$t->http(GET => "http://127.0.0.1:$idp_port/logout?session=$session");
$r = $t->http(GET => '/api/v1/fleet/sso',
              headers => { Cookie => "idp_session=$session" });
is($r->{status}, 302, 'after logout: redirected again');

my $mark = $t->log_mark;
$r = $t->http(GET => '/misconfigured/sso');
is($r->{status}, 403, 'no user from the configured variable: 403');
like(eval { JSON::PP->new->decode($r->{body})->{message} } // '',
     qr/not signed in/, 'you are not signed in');
like($t->error_log(from => $mark), qr/\[error\].*mdm_enroll_user is empty/,
     'an error line: the location is not protected');
is(counts(), $counts, 'nothing recorded');

is($t->http(POST => '/misconfigured/sso', body => 'x')->{status}, 405,
   'POST: 405');

is_deeply([ $t->log_alerts ], [], 'no alerts in the error log');

done_testing;
