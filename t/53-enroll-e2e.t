#!/usr/bin/perl
# Enrollment end to end, as a device does it: the ADE profile (from the
# real Apple-signed capture) -> scepclient with the profile's challenge
# against the SCEP location -> Authenticate and TokenUpdate over mTLS with
# the issued certificate -> the enrollment is enabled and leads back, via
# its certificate binding and the challenge, to the MachineInfo.  The
# challenge works once.  Then over the air with what SCEP really issues:
# phase 2 (the real capture) -> scepclient with the throw-away challenge ->
# phase 3 signed with that identity -> scepclient -> Authenticate.
#
# It needs the SCEP module (location /mdm/apple/scep, mdm_scep) and the
# check-in module (location /mdm/apple/mdm, mdm_checkin) in the build, and
# skips, saying so, while nginx -t does not know them.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use Digest::SHA qw(sha256_hex);
use MDM::Test;
use MDM::Enroll qw(parse_plist plist_xml);

my $t = MDM::Test->new(name => 'enroll-e2e')->plan_skip_unless_module;

my $e = MDM::Enroll->new($t);
my $srv = $t->tls_server_cert;
my $scep_ca = $e->{scep_ca};

# the SCEP CA: one-time challenges (mdm_scep_one_time_challenges, on by
# default) and no static one; Debian's scepclient envelopes with DES
my $scep_conf = <<"EOF";
            mdm_scep;
            mdm_scep_ca_certificate $scep_ca->{cert};
            mdm_scep_ca_key $scep_ca->{key};
            mdm_scep_des on;
EOF

$t->write_conf(<<'EOF' . $e->http_conf . <<"EOF2");
    mdm_postgres "%%PG%% sslmode=disable";
    mdm_redis %%REDIS%%;
    mdm_helper_path %%TESTDIR%%/helper;
EOF
    # plain http for SCEP (its messages are signed and enveloped)
    server {
        listen 127.0.0.1:%%PORT_0%%;

        location = /api/mdm/apple/enroll {
            mdm_enroll ade;
            mdm_enroll_scep_url http://127.0.0.1:%%PORT_0%%/mdm/apple/scep;
        }

        location = /api/latest/fleet/ota_enrollment {
            mdm_enroll ota;
            mdm_enroll_scep_url http://127.0.0.1:%%PORT_0%%/mdm/apple/scep;
        }

        location = /mdm/apple/scep {
$scep_conf
        }
    }

    server {
        listen 127.0.0.1:%%PORT_1%% ssl;
        server_name localhost;

        ssl_certificate $srv->{cert};
        ssl_certificate_key $srv->{key};
        ssl_verify_client optional_no_ca;

        location = /mdm/apple/mdm {
            mdm_checkin;
            mdm_checkin_ca $scep_ca->{cert};
        }
    }
EOF2

my ($st, $out) = $t->nginx_test;
if ($st != 0 && $out =~ /unknown directive "(mdm_scep|mdm_checkin)"/) {
    plan skip_all => "the $1 module is not in the build yet"
                     . " (nginx -t: unknown directive \"$1\")";
}
is($st, 0, 'nginx -t accepts SCEP, check-in and enrollment together')
    or diag $out;

$t->start_postgres;
$t->start_redis;
$t->run;

$t->wait_for(sub {
    $t->psql("SELECT to_regclass('mdm_enroll_devices') IS NOT NULL") eq 't'
}, what => 'the helper to apply the schema');

my $content = $e->capture_content;
my ($udid, $serial) = @$content{qw(UDID SERIAL)};

# 1. the profile

my $r = $t->http(POST => '/api/mdm/apple/enroll', body => $e->capture,
                 headers => { 'Content-Type' => 'application/pkcs7-signature' });
is($r->{status}, 200, 'ADE profile: 200');
my ($ok, $xml) = $e->verify_profile($r->{body});
ok($ok, 'signed');
my $p = parse_plist($xml);
my ($scep) = grep { $_->{PayloadType} eq 'com.apple.security.scep' }
             @{ $p->{PayloadContent} };
my ($mdm) = grep { $_->{PayloadType} eq 'com.apple.mdm' }
            @{ $p->{PayloadContent} };
my $challenge = $scep->{PayloadContent}{Challenge};

# 2. SCEP with the profile's challenge

# scepclient keeps csr.pem and self.pem beside the key: a directory each
mkdir $t->path($_) for qw(device other ota-scep ota-mdm);
my $key = $t->path('device/key.pem');
my $cert = $t->path('device/client.pem');

sub scepclient {
    my ($challenge, $out, $keyfile) = @_;
    return $t->run_command([ 'scepclient',
                             '-server-url', $scep->{PayloadContent}{URL},
                             '-challenge', $challenge,
                             '-private-key', $keyfile // $key,
                             '-certificate', $out,
                             '-cn', $udid, '-organization', 'nginx-mdm tests' ],
                           timeout => 30);
}

my $sc = scepclient($challenge, $cert);
is($sc->{status}, 0, 'scepclient gets a certificate with the challenge')
    or diag "$sc->{stdout}$sc->{stderr}";

my $verify = $t->run_command([ 'openssl', 'verify', '-CAfile',
                               $scep_ca->{cert}, $cert ]);
is($verify->{status}, 0, 'issued by our SCEP CA') or diag $verify->{stderr};

is($t->psql("SELECT c.purpose || ',' || c.udid || ',' || (c.used_at IS NOT NULL)"
            . " FROM mdm_certificates k JOIN mdm_challenges c"
            . " ON c.id = k.challenge_id"
            . " WHERE k.sha256 = decode('" . $t->cert_sha256($cert)
            . "', 'hex')"),
   "ade,$udid,true", 'the certificate records the challenge, now used');

# the challenge works once: another key (another transaction; the same
# request sent again would get the same certificate back)

$sc = scepclient($challenge, $t->path('other/client.pem'),
                 $t->path('other/key.pem'));
isnt($sc->{status}, 0, 'the same challenge with another key: refused');
ok(!-s $t->path('other/client.pem'), 'no certificate');

# 3. check-in with the issued certificate

my %checkin = ('Content-Type' => 'application/x-apple-aspen-mdm-checkin');

$r = $t->http(PUT => '/mdm/apple/mdm', port => 1, host => 'localhost',
              cert => $cert, key => $key, headers => \%checkin,
              body => plist_xml({ MessageType => 'Authenticate',
                                  Topic => $mdm->{Topic},
                                  UDID => '00008030-0000000000000000',
                                  SerialNumber => 'OTHERSERIAL' }));
isnt($r->{status}, 200, 'Authenticate as another device with this'
     . " certificate: refused ($r->{status})");
isnt($r->{status}, 401, '... never with 401');

$r = $t->http(PUT => '/mdm/apple/mdm', port => 1, host => 'localhost',
              cert => $cert, key => $key, headers => \%checkin,
              body => plist_xml({ MessageType => 'Authenticate',
                                  Topic => $mdm->{Topic}, UDID => $udid,
                                  SerialNumber => $serial,
                                  Model => 'VirtualMac2,1',
                                  OSVersion => '13.0',
                                  BuildVersion => '22A380' }));
is($r->{status}, 200, 'Authenticate with the issued certificate: 200');

$r = $t->http(PUT => '/mdm/apple/mdm', port => 1, host => 'localhost',
              cert => $cert, key => $key, headers => \%checkin,
              body => plist_xml({ MessageType => 'TokenUpdate',
                                  Topic => $mdm->{Topic}, UDID => $udid,
                                  Token => { data => "\x01" x 32 },
                                  PushMagic => 'E2E-PUSH-MAGIC' }));
is($r->{status}, 200, 'TokenUpdate: 200');

is($t->psql("SELECT enabled FROM mdm_enrollments WHERE id = '$udid'"), 't',
   'the enrollment is enabled');

# 4. the enrollment leads back to the MachineInfo it came from

is($t->psql("SELECT c.purpose || ',' || (c.machine_info->>'SERIAL')"
            . " FROM mdm_cert_bindings b"
            . " JOIN mdm_certificates k ON k.sha256 = b.sha256"
            . " JOIN mdm_challenges c ON c.id = k.challenge_id"
            . " WHERE b.enrollment_id = '$udid'"),
   "ade,$serial",
   'enrollment -> binding -> certificate -> challenge -> MachineInfo');

###########################################################################
# over the air, with what SCEP really issues: phase 2 (the real capture,
# its CHALLENGE inserted as a token) -> scepclient with the throw-away
# challenge -> phase 3 signed with that certificate -> scepclient with the
# enrollment challenge -> Authenticate

my %aspen = ('Content-Type' => 'application/pkcs7-signature');
my $ota = '/api/latest/fleet/ota_enrollment';

$t->psql("INSERT INTO mdm_enroll_tokens (digest, sso_user, expires_at)"
         . " VALUES (decode('" . sha256_hex($content->{CHALLENGE}) . "',"
         . " 'hex'), 'dave', now() + interval '1 hour')");

$r = $t->http(POST => $ota, headers => \%aspen, body => $e->capture);
is($r->{status}, 200, 'OTA phase 2: 200');
(undef, $xml) = $e->verify_profile($r->{body});
$p = parse_plist($xml);
$scep = $p->{PayloadContent}[0];
is($scep->{PayloadType}, 'com.apple.security.scep', 'the SCEP payload alone');

$sc = scepclient($scep->{PayloadContent}{Challenge},
                 $t->path('ota-scep/client.pem'),
                 $t->path('ota-scep/key.pem'));
is($sc->{status}, 0, 'scepclient gets the throw-away identity')
    or diag "$sc->{stdout}$sc->{stderr}";

my $plain = $t->run_command([ 'openssl', 'cms', '-verify', '-noverify',
                              '-inform', 'DER', '-in',
                              $t->write_file('tmp/capture.der',
                                             $e->capture) ]);
my $phase3 = $e->sign($plain->{stdout}, $t->path('ota-scep/client.pem'),
                      $t->path('ota-scep/key.pem'));

$r = $t->http(POST => $ota, headers => \%aspen, body => $phase3);
is($r->{status}, 200, 'OTA phase 3 signed with the issued identity: 200');
(undef, $xml) = $e->verify_profile($r->{body});
$p = parse_plist($xml);
($scep) = grep { $_->{PayloadType} eq 'com.apple.security.scep' }
          @{ $p->{PayloadContent} };
ok($scep && grep({ $_->{PayloadType} eq 'com.apple.mdm' }
                 @{ $p->{PayloadContent} }), 'the enrollment profile');

$sc = scepclient($scep->{PayloadContent}{Challenge},
                 $t->path('ota-mdm/client.pem'), $t->path('ota-mdm/key.pem'));
is($sc->{status}, 0, 'scepclient gets the MDM identity')
    or diag "$sc->{stdout}$sc->{stderr}";

$r = $t->http(PUT => '/mdm/apple/mdm', port => 1, host => 'localhost',
              cert => $t->path('ota-mdm/client.pem'),
              key => $t->path('ota-mdm/key.pem'), headers => \%checkin,
              body => plist_xml({ MessageType => 'Authenticate',
                                  Topic => $mdm->{Topic}, UDID => $udid,
                                  SerialNumber => $serial }));
is($r->{status}, 200, 'Authenticate with the OTA identity: 200');

is($t->psql("SELECT string_agg(c.purpose || ':' || coalesce(c.sso_user, '-'),"
            . " ',' ORDER BY k.serial)"
            . " FROM mdm_cert_bindings b"
            . " JOIN mdm_certificates k ON k.sha256 = b.sha256"
            . " JOIN mdm_challenges c ON c.id = k.challenge_id"
            . " WHERE b.enrollment_id = '$udid'"),
   'ade:-,ota:dave',
   'both identities bound to the enrollment; the OTA one leads to dave');

done_testing;
