#!/usr/bin/perl
# Enrollment profiles and automatic enrollment (ADE): nginx -t, the signed
# profile (openssl cms -verify, every payload key, fixed UUIDs), the ADE
# url by POST of the MachineInfo and by GET with x-apple-aspen-deviceinfo
# (the real Apple-signed phase-2 capture stands in for a MachineInfo: the
# same CMS, the same chain), the challenge minted and bound to the device,
# the minimum-OS gate, and bad input: forged, truncated, non-Apple, too
# large, none at all.  Nothing is recorded for a refused request.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use Digest::SHA qw(sha256_hex);
use JSON::PP ();
use MIME::Base64 qw(encode_base64 encode_base64url);
use MDM::Test;
use MDM::Enroll qw(parse_plist plist_xml);

my $t = MDM::Test->new(name => 'enroll')->plan_skip_unless_module;

$t->start_postgres;
$t->start_redis;

my $e = MDM::Enroll->new($t);
my $v = $t->vectors_dir;

# a device CA the test owns, standing in for Apple's in one location, to
# sign MachineInfos that carry OS_VERSION
my $fake_apple = $e->{fake_apple};
my $fake_device = $t->make_cert(ca => $fake_apple, cn => 'fake-device',
                                name => 'fake-device');
my $stranger_ca = $t->make_ca(name => 'stranger-ca',
    subject => '/C=US/O=Apple Inc./OU=Apple iPhone/CN=Apple iPhone Device CA');
my $stranger = $t->make_cert(ca => $stranger_ca, cn => 'not-a-device',
                             name => 'stranger');

my $conf = <<'EOF' . $e->http_conf . <<'EOF2';
    mdm_postgres "%%PG%% sslmode=disable";
    mdm_redis %%REDIS%%;
    mdm_helper_path %%TESTDIR%%/helper;
    client_max_body_size 1m;
EOF
    server {
        listen 127.0.0.1:%%PORT_0%%;

        location = /status { mdm_status; }

        location = /api/mdm/apple/enroll {
            mdm_enroll ade;
        }

        location = /gated/enroll {
            mdm_enroll ade;
            mdm_enroll_apple_device_ca %%TESTDIR%%/pki/fake-apple-device-ca.crt;
            mdm_enroll_min_os_version ios 17.0 21A329;
            mdm_enroll_min_os_version macos 14.0;
        }

        location = /options/enroll {
            mdm_enroll ade;
            mdm_enroll_apple_device_ca %%TESTDIR%%/pki/fake-apple-device-ca.crt;
            mdm_enroll_topic com.apple.mgmt.External.test-topic;
            mdm_enroll_checkin_url https://mdm.example.org/mdm/apple/checkin;
            mdm_enroll_access_rights 3;
            mdm_enroll_sign_message on;
            mdm_enroll_check_out_when_removed off;
            mdm_enroll_server_capabilities com.apple.mdm.per-user-connections;
            mdm_enroll_description "Installs the MDM profile";
            mdm_enroll_scep_key_size 4096;
            mdm_enroll_scep_name "nginx-mdm";
        }
    }
EOF2

###########################################################################
# nginx -t: every mistake names the directive and the fix

sub conf_test {
    my ($from, $to) = @_;
    my $c = $conf;
    $c =~ s/\Q$from\E/$to/ or die "no '$from' in the configuration\n";
    $t->write_conf($c);
    return $t->nginx_test;
}

my ($st, $out);

($st, $out) = conf_test("    mdm_enroll_signing_certificate $e->{signer}{cert};\n",
                        '');
isnt($st, 0, 'nginx -t: no signing certificate');
like($out, qr/"mdm_enroll" in .*nginx\.conf:\d+ needs "mdm_enroll_signing_certificate"/,
     'names the location line and the missing directive');

($st, $out) = conf_test("mdm_enroll_push_certificate $e->{push_cert}",
    "mdm_enroll_push_certificate $v/apns/micromdm_mock_push_cert_no_uid.pem");
isnt($st, 0, 'nginx -t: push certificate without UID');
like($out, qr/"mdm_enroll_push_certificate".*is not an MDM push certificate/,
     'says it is no MDM push certificate');

($st, $out) = conf_test('mdm_enroll_topic com.apple.mgmt.External.test-topic',
                        'mdm_enroll_topic com.example.topic');
isnt($st, 0, 'nginx -t: a topic without com.apple.mgmt.');
like($out, qr/mdm_enroll_topic.*must start with "com\.apple\.mgmt\."/,
     'says what it must start with');

($st, $out) = conf_test(
    'mdm_enroll_apple_device_ca %%TESTDIR%%/pki/fake-apple-device-ca.crt;',
    "mdm_enroll_apple_device_ca $e->{apple_chain};");
isnt($st, 0, 'nginx -t: Apple\'s full chain as device CA');
like($out, qr/holds 3 certificates: give the device CA alone .*never Apple Root CA/,
     'refused: the device CA alone, never Apple Root CA');

($st, $out) = conf_test('mdm_enroll_access_rights 3;',
                        'mdm_enroll_access_rights 129;');
isnt($st, 0, 'nginx -t: AccessRights 128 without 64');
like($out, qr/mdm_enroll_access_rights.*must include 64/, 'says which bit');

($st, $out) = conf_test('mdm_enroll_access_rights 3;',
                        'mdm_enroll_access_rights 0;');
isnt($st, 0, 'nginx -t: AccessRights 0');

($st, $out) = conf_test('mdm_enroll_min_os_version ios 17.0 21A329;',
                        'mdm_enroll_min_os_version ios 17.x;');
isnt($st, 0, 'nginx -t: a version that is not dotted decimal');
like($out, qr/invalid version "17\.x"/, 'names the version');

($st, $out) = conf_test('"/O=nginx-mdm tests/CN=MDM Identity"',
                        '"CN=no slash"');
isnt($st, 0, 'nginx -t: a subject without the leading slash');
like($out, qr/invalid subject .*use "\/O=Example Inc\.\/CN=MDM Identity"/,
     'shows the form');

($st, $out) = conf_test('mdm_enroll_server_url https://',
                        'mdm_enroll_server_url http://');
isnt($st, 0, 'nginx -t: an http ServerURL');
like($out, qr/"mdm_enroll_server_url" must be an https:\/\/ URL/,
     'ServerURL must be https');

($st, $out) = conf_test('mdm_enroll ade;
        }

        location = /gated',
    'mdm_enroll sso;
        }

        location = /gated');
isnt($st, 0, 'nginx -t: sso without mdm_enroll_user');
like($out, qr/needs "mdm_enroll_user"/, 'names mdm_enroll_user');

# the SCEP test CA's key is encrypted with an empty passphrase
my $scep_ca_cert = "$v/scep/micromdm-scep_testca_ca.pem";
my $scep_ca_key = "$v/scep/micromdm-scep_testca_ca.key.pem";
my $signing = "    mdm_enroll_signing_certificate $e->{signer}{cert};\n"
            . "    mdm_enroll_signing_certificate_key $e->{signer}{key};\n";
$t->write_file('empty-password', "\n");

($st, $out) = conf_test($signing,
    "    mdm_enroll_signing_certificate $scep_ca_cert;\n"
    . "    mdm_enroll_signing_certificate_key $scep_ca_key;\n");
isnt($st, 0, 'nginx -t: an encrypted signing key without a password file');
like($out, qr/private key is encrypted and no passphrase is configured/,
     'says so');

($st, $out) = conf_test($signing,
    "    mdm_enroll_signing_certificate $scep_ca_cert;\n"
    . "    mdm_enroll_signing_certificate_key $scep_ca_key"
    . " %%TESTDIR%%/empty-password;\n");
is($st, 0, 'nginx -t: the same key with its (empty) password file')
    or diag $out;

($st, $out) = conf_test("mdm_enroll_signing_certificate_key $e->{signer}{key}",
                        "mdm_enroll_signing_certificate_key"
                        . " $e->{fake_apple}{key}");
isnt($st, 0, 'nginx -t: a signing key of another certificate');
like($out, qr/the signing key does not match the signing certificate/,
     'says so');

$t->write_conf($conf);
($st, $out) = $t->nginx_test;
is($st, 0, 'nginx -t accepts the configuration') or diag $out;

my $start = $t->log_mark;
$t->run;

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
my $serial = $content->{SERIAL};

my %aspen = ('Content-Type' => 'application/pkcs7-signature');

###########################################################################
# ADE url, POST of the signed MachineInfo

my $mark = $t->log_mark;
my $r = $t->http(POST => '/api/mdm/apple/enroll', body => $capture,
                 headers => \%aspen);

is($r->{status}, 200, 'ADE POST of a signed MachineInfo: 200');
is($r->{headers}{'content-type'}, 'application/x-apple-aspen-config',
   'Content-Type application/x-apple-aspen-config');
is($r->{headers}{'cache-control'}, 'no-store', 'never cached');

my ($ok, $xml, $err) = $e->verify_profile($r->{body});
ok($ok, 'openssl cms -verify accepts the profile') or diag $err;

my $other_ca = $t->make_ca(name => 'unrelated-ca');
my ($ok2) = $e->verify_profile($r->{body}, ca => $other_ca->{cert});
ok(!$ok2, 'and refuses it against another CA');

my $p = parse_plist($xml);
is($p->{PayloadType}, 'Configuration', 'PayloadType Configuration');
is($p->{PayloadVersion}, 1, 'PayloadVersion 1');
is($p->{PayloadIdentifier}, 'org.nginx-mdm.enrollment', 'default identifier');
is($p->{PayloadDisplayName}, 'Test MDM', 'display name from the directive');
is($p->{PayloadOrganization}, 'nginx-mdm tests', 'organization');
like($p->{PayloadUUID}, qr/^[0-9A-F]{8}-[0-9A-F]{4}-5[0-9A-F]{3}-[89AB][0-9A-F]{3}-[0-9A-F]{12}$/,
     'a name-based UUID');
is(scalar @{ $p->{PayloadContent} }, 2, 'two payloads');

my ($scep) = grep { $_->{PayloadType} eq 'com.apple.security.scep' }
             @{ $p->{PayloadContent} };
my ($mdm) = grep { $_->{PayloadType} eq 'com.apple.mdm' }
            @{ $p->{PayloadContent} };
ok($scep && $mdm, 'a SCEP payload and an MDM payload');

my $sc = $scep->{PayloadContent};
is($sc->{URL}, 'https://mdm.example.org/mdm/apple/scep', 'SCEP URL');
like($sc->{Challenge}, qr/^[0-9a-f]{48}$/, 'a one-time challenge');
is($sc->{Keysize}, 2048, 'Keysize 2048');
is($sc->{'Key Type'}, 'RSA', 'Key Type RSA');
is($sc->{'Key Usage'}, 5, 'Key Usage 5');
is_deeply($sc->{Subject}, [ [ [ 'O', 'nginx-mdm tests' ] ],
                            [ [ 'CN', 'MDM Identity' ] ] ],
          'Subject from mdm_enroll_scep_subject');
ok(!exists $sc->{Name}, 'no Name unless configured');

is($mdm->{ServerURL}, 'https://mdm.example.org/mdm/apple/mdm', 'ServerURL');
ok(!exists $mdm->{CheckInURL}, 'no CheckInURL unless configured');
is($mdm->{Topic}, $e->topic, 'Topic is the push certificate\'s UID');
like($mdm->{Topic}, qr/^com\.apple\.mgmt\.External\.e0bd1eac-/,
     'the real push certificate\'s topic');
is($mdm->{IdentityCertificateUUID}, $scep->{PayloadUUID},
   'IdentityCertificateUUID is the SCEP payload');
is($mdm->{AccessRights}, 8191, 'AccessRights 8191 by default');
is($mdm->{SignMessage}, 0, 'SignMessage false by default');
is($mdm->{CheckOutWhenRemoved}, 1, 'CheckOutWhenRemoved true by default');
is_deeply($mdm->{ServerCapabilities},
          [ 'com.apple.mdm.per-user-connections',
            'com.apple.mdm.bootstraptoken' ],
          'ServerCapabilities: per-user connections and bootstrap token');

# the challenge as stored: its digest only, bound to the device

my $challenge = $sc->{Challenge};
my ($row) = $t->psql_rows(
    "SELECT purpose, udid, serial_number, sso_user IS NULL,"
    . " abs(extract(epoch FROM expires_at - created_at) - 600) < 5,"
    . " machine_info->>'PRODUCT', machine_info ? 'CHALLENGE', used_at IS NULL"
    . " FROM mdm_challenges WHERE digest = decode('"
    . sha256_hex($challenge) . "', 'hex')");
is($row, "ade|$udid|$serial|t|t|VirtualMac2,1|f|t",
   'challenge stored as its digest: purpose ade, bound to UDID and serial,'
   . ' 10 minutes, machine info without the token');
is($t->psql("SELECT count(*) FROM mdm_challenges WHERE digest::text LIKE"
            . " '%$challenge%' OR machine_info::text LIKE '%$challenge%'"),
   0, 'the challenge itself is stored nowhere');

is($t->psql("SELECT serial_number || '|' || product || '|' || version"
            . " || '|' || source FROM mdm_enroll_devices"
            . " WHERE udid = '$udid'"),
   "$serial|VirtualMac2,1|22A380|ade", 'the device is recorded');

like($t->error_log(from => $mark),
     qr/mdm enroll ade: profile for device "$udid" serial "$serial"/,
     'one log line for the enrollment');
unlike($t->error_log(from => $mark), qr/$challenge/,
       'the challenge is never logged');

# again: a new challenge, the same identifiers and UUIDs

my $r2 = $t->http(POST => '/api/mdm/apple/enroll', body => $capture,
                  headers => \%aspen);
my (undef, $xml2) = $e->verify_profile($r2->{body});
my $p2 = parse_plist($xml2);
isnt($p2->{PayloadContent}[0]{PayloadContent}{Challenge}, $challenge,
     'each request gets its own challenge');
is_deeply([ map { ($_->{PayloadIdentifier}, $_->{PayloadUUID}) }
            $p2, @{ $p2->{PayloadContent} } ],
          [ map { ($_->{PayloadIdentifier}, $_->{PayloadUUID}) }
            $p, @{ $p->{PayloadContent} } ],
          'identifiers and UUIDs are fixed: a re-install replaces the'
          . ' profile');
is($t->psql("SELECT count(*) FROM mdm_enroll_devices"), 1,
   'one device record, updated');

###########################################################################
# ADE url, GET with x-apple-aspen-deviceinfo (and the deviceinfo argument)

my $before = $t->psql('SELECT count(*) FROM mdm_challenges');

$r = $t->http(GET => '/api/mdm/apple/enroll',
              headers => { 'x-apple-aspen-deviceinfo' =>
                           encode_base64($capture, '') });
is($r->{status}, 200, 'GET with x-apple-aspen-deviceinfo: 200');
($ok) = $e->verify_profile($r->{body});
ok($ok, 'a signed profile');

$r = $t->http(GET => '/api/mdm/apple/enroll',
              headers => { 'X-Apple-Aspen-DeviceInfo' =>
                           encode_base64url($capture) });
is($r->{status}, 200, 'URL-safe base64 without padding, any header case');

my $arg = encode_base64($capture, '');
$arg =~ s/([^A-Za-z0-9])/sprintf '%%%02X', ord $1/ge;
$r = $t->http(GET => "/api/mdm/apple/enroll?deviceinfo=$arg");
is($r->{status}, 200, 'the deviceinfo argument (kept across redirects)');

is($t->psql("SELECT count(*) FROM mdm_challenges WHERE udid = '$udid'"
            . " AND purpose = 'ade'"), $before + 3,
   'each bound to the device');

###########################################################################
# bad input: the device's fault, a clear answer, nothing recorded

my $counts = counts();

sub refused {
    my ($what, $status, $message, @req) = @_;
    my $m = $t->log_mark;
    my $res = $t->http(@req);
    is($res->{status}, $status, "$what: $status");
    is($res->{headers}{'content-type'}, 'application/json',
       "$what: JSON body");
    my $j = eval { JSON::PP->new->decode($res->{body}) } // {};
    like($j->{message} // '', $message, "$what: the message the device shows");
    is(counts(), $counts, "$what: nothing recorded");
    like($t->error_log(from => $m), qr/\[info\].*mdm enroll/,
         "$what: one info line in the log");
    return $res;
}

refused('GET without device information', 400, qr/did not send its device/,
        GET => '/api/mdm/apple/enroll');

refused('truncated MachineInfo', 400, qr/malformed/,
        POST => '/api/mdm/apple/enroll', headers => \%aspen,
        body => substr($capture, 0, length($capture) - 200));

refused('garbage', 400, qr/malformed/,
        POST => '/api/mdm/apple/enroll', headers => \%aspen,
        body => "not a CMS at all\n");

refused('bad base64 header', 400, qr/malformed/,
        GET => '/api/mdm/apple/enroll',
        headers => { 'x-apple-aspen-deviceinfo' => '%%%not base64%%%' });

(my $forged = $capture) =~ s/\Q$serial\E/C02FORGED1/ or die;
refused('forged MachineInfo (serial changed)', 403, qr/not correctly signed/,
        POST => '/api/mdm/apple/enroll', headers => \%aspen, body => $forged);

my $fake_info = plist_xml({ UDID => '00008030-001A2D8E0C38802E',
                            SERIAL => 'F2LXK0AAHG7F', PRODUCT => 'iPhone15,2',
                            VERSION => '21A329', OS_VERSION => '17.0' });
refused('MachineInfo signed by a non-Apple certificate', 403,
        qr/could not be verified as an Apple device/,
        POST => '/api/mdm/apple/enroll', headers => \%aspen,
        body => $e->sign($fake_info, $stranger->{cert}, $stranger->{key},
                         chain => $stranger_ca->{cert}));

refused('MachineInfo signed with Apple\'s chain attached but another key',
        403, qr/could not be verified as an Apple device/,
        POST => '/api/mdm/apple/enroll', headers => \%aspen,
        body => $e->sign($fake_info, $fake_device->{cert},
                         $fake_device->{key}, chain => $e->{apple_chain}));

refused('a body over 64 KiB', 413, qr/too large/,
        POST => '/api/mdm/apple/enroll', headers => \%aspen,
        body => 'x' x (65 * 1024));

my $no_serial = $e->sign(plist_xml({ UDID => 'U1', PRODUCT => 'iPhone15,2' }),
                         $fake_device->{cert}, $fake_device->{key});
refused('MachineInfo without SERIAL', 400, qr/UDID and serial number/,
        POST => '/gated/enroll', headers => \%aspen, body => $no_serial);

is($t->http(PUT => '/api/mdm/apple/enroll', body => $capture)->{status}, 405,
   'PUT: 405');

###########################################################################
# the minimum-OS gate (a device CA of our own signs the MachineInfos)

sub machine_info {
    my (%kv) = @_;
    return $e->sign(plist_xml({ UDID => '00008030-001A2D8E0C38802E',
                                SERIAL => 'F2LXK0AAHG7F', VERSION => '20G75',
                                LANGUAGE => 'en-US', %kv }),
                    $fake_device->{cert}, $fake_device->{key}, md => 'sha1');
}

my $old_ios = machine_info(PRODUCT => 'iPhone15,2', OS_VERSION => '16.6',
                           MDM_CAN_REQUEST_SOFTWARE_UPDATE => \1);

$mark = $t->log_mark;
$r = $t->http(POST => '/gated/enroll', headers => \%aspen, body => $old_ios);
is($r->{status}, 403, 'iOS 16.6 below 17.0: 403');
is($r->{headers}{'content-type'}, 'application/json', 'JSON');
is_deeply(JSON::PP->new->decode($r->{body}),
          { code => 'com.apple.softwareupdate.required',
            details => { OSVersion => '17.0', BuildVersion => '21A329' } },
          'com.apple.softwareupdate.required with OSVersion and BuildVersion');
is(counts(), $counts, 'nothing recorded');
like($t->error_log(from => $mark),
     qr/16\.6 is below 17\.0, software update required/, 'logged');

$r = $t->http(POST => '/gated/enroll', headers => \%aspen,
              body => machine_info(PRODUCT => 'MacBookPro18,1',
                                   OS_VERSION => '13.6.1',
                                   MDM_CAN_REQUEST_SOFTWARE_UPDATE => \1));
is($r->{status}, 403, 'macOS 13.6.1 below 14.0: 403');
is_deeply(JSON::PP->new->decode($r->{body})->{details}, { OSVersion => '14.0' },
          'no BuildVersion unless configured');

$r = $t->http(POST => '/gated/enroll', headers => \%aspen,
              body => machine_info(PRODUCT => 'iPhone15,2',
                                   OS_VERSION => '16.6',
                                   MDM_CAN_REQUEST_SOFTWARE_UPDATE => \0));
is($r->{status}, 200, 'below, but unable to update during setup: enrolled');

$r = $t->http(POST => '/gated/enroll', headers => \%aspen,
              body => machine_info(PRODUCT => 'iPhone15,2',
                                   OS_VERSION => '17.0.3',
                                   MDM_CAN_REQUEST_SOFTWARE_UPDATE => \1));
is($r->{status}, 200, 'iOS 17.0.3: enrolled');

$r = $t->http(POST => '/gated/enroll', headers => \%aspen,
              body => machine_info(PRODUCT => 'iPad13,4', OS_VERSION => '15.0',
                                   MDM_CAN_REQUEST_SOFTWARE_UPDATE => \1));
is($r->{status}, 200, 'iPadOS has no minimum here: enrolled');

is($t->psql("SELECT os_version || '|' || product || '|' || language"
            . " FROM mdm_enroll_devices"
            . " WHERE udid = '00008030-001A2D8E0C38802E'"),
   '15.0|iPad13,4|en-US', 'the device record follows the last MachineInfo');

###########################################################################
# every profile option is a directive

$r = $t->http(POST => '/options/enroll', headers => \%aspen,
              body => machine_info(PRODUCT => 'iPhone15,2'));
is($r->{status}, 200, 'a location with every option');
(undef, $xml) = $e->verify_profile($r->{body});
$p = parse_plist($xml);
($scep, $mdm) = @{ $p->{PayloadContent} };
is($mdm->{Topic}, 'com.apple.mgmt.External.test-topic', 'mdm_enroll_topic');
is($mdm->{CheckInURL}, 'https://mdm.example.org/mdm/apple/checkin',
   'mdm_enroll_checkin_url');
is($mdm->{AccessRights}, 3, 'mdm_enroll_access_rights');
is($mdm->{SignMessage}, 1, 'mdm_enroll_sign_message');
is($mdm->{CheckOutWhenRemoved}, 0, 'mdm_enroll_check_out_when_removed');
is_deeply($mdm->{ServerCapabilities}, [ 'com.apple.mdm.per-user-connections' ],
          'mdm_enroll_server_capabilities');
is($p->{PayloadDescription}, 'Installs the MDM profile',
   'mdm_enroll_description');
is($scep->{PayloadContent}{Keysize}, 4096, 'mdm_enroll_scep_key_size');
is($scep->{PayloadContent}{Name}, 'nginx-mdm', 'mdm_enroll_scep_name');

is_deeply([ $t->log_alerts(from => $start) ], [],
          'no alerts in the error log');

done_testing;
