#!/usr/bin/perl
# The admin JSON API: configuration checks, access control, every endpoint
# with its success and error statuses, a huge ID list, and PostgreSQL down.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use Digest::SHA qw(sha256_hex);
use JSON::PP ();
use MIME::Base64 qw(encode_base64 decode_base64);
use MDM::Test;

my $t = MDM::Test->new(name => 'api')->plan_skip_unless_module;

$t->start_postgres;
$t->start_redis;

my $JSON = JSON::PP->new->canonical;

# the admin credential, as make run makes it
my $secret = 'S3cret-' . int rand 1e9;
my $htpasswd = $t->run_command([ 'openssl', 'passwd', '-apr1', $secret ]);
$t->write_file('htpasswd', "admin:$htpasswd->{stdout}");
my $AUTH = 'Basic ' . encode_base64("admin:$secret", '');

my $conf = <<'EOF';
    mdm_postgres "%%PG%% sslmode=disable";
    mdm_postgres_connect_timeout 1s;
    mdm_redis %%REDIS%%;
    mdm_retry_after 9;
    mdm_helper_path %%TESTDIR%%/helper;

    server {
        listen 127.0.0.1:%%PORT_0%%;

        # big ID lists: the body goes to a temporary file beyond 16k
        client_max_body_size 32m;
        client_body_buffer_size 16k;

        location /api/v1/mdm/ {
            auth_basic "nginx-mdm admin";
            auth_basic_user_file %%TESTDIR%%/htpasswd;
            mdm_api;
            mdm_api_auth $remote_user;
            mdm_api_challenge_ttl 1h 2h;
        }

        # the variable is empty unless a header came: a forged-free 403
        location /unauthorized/ {
            mdm_api;
            mdm_api_auth $http_x_admin;
        }

        location = /status { mdm_status; }
    }
EOF

###########################################################################
# nginx -t: no API without access control, prefix locations only

$t->write_conf($conf =~ s/\s+mdm_api_auth \$http_x_admin;//r);
my ($st, $out) = $t->nginx_test;
isnt($st, 0, 'nginx -t fails for mdm_api without mdm_api_auth');
like($out, qr/"mdm_api" in \S+nginx.conf:\d+ has no "mdm_api_auth"/,
     'the message names the file, the line and the directive');

$t->write_conf($conf =~ s/\$http_x_admin/off/r);
($st, $out) = $t->nginx_test;
is($st, 0, 'mdm_api_auth off; is accepted when said explicitly') or diag $out;

$t->write_conf($conf =~ s/location \/unauthorized\//location ~ ^\/re\//r);
($st, $out) = $t->nginx_test;
isnt($st, 0, 'nginx -t fails for mdm_api in a regex location');
like($out, qr/mdm_api.*prefix location/, 'and says why');

$t->write_conf($conf =~ s/mdm_api_auth \$http_x_admin/mdm_api_auth admin/r);
($st, $out) = $t->nginx_test;
isnt($st, 0, 'mdm_api_auth without a variable fails');

$t->write_conf($conf =~ s/1h 2h/2h 1h/r);
($st, $out) = $t->nginx_test;
isnt($st, 0, 'mdm_api_challenge_ttl above its maximum fails');

$t->write_conf($conf);
($st, $out) = $t->nginx_test;
is($st, 0, 'the configuration is accepted') or diag $out;

$t->run;
my $mark = $t->log_mark;

my ($top) = sort { $b <=> $a } map { m{/0*(\d+)_[^/]*\.sql$} ? $1 : () }
            glob($t->repo_dir . '/ngx_mdm_core/sql/[0-9]*.sql');
$t->wait_for(sub {
    $t->http(GET => '/status')->{body} =~ /"schema_version": $top\b/
}, what => 'the helper to apply the schema');

###########################################################################
# seed: a device with a user channel, one without a push token, a
# disabled one, and many for the huge list

$t->psql(<<'SQL');
INSERT INTO mdm_enrollments (id, device_id, channel, enrollment_type, udid,
    serial_number, os_version, model_name, topic, push_token, push_magic,
    enabled, last_seen_at)
VALUES
  ('DEV1', 'DEV1', 'device', 'Device', 'DEV1', 'SER1', '17.4', 'iPhone',
   'com.apple.mgmt.test', '\x0102', 'MAGIC-SECRET-1', true, now()),
  ('DEV2', 'DEV2', 'device', 'Device', 'DEV2', 'SER2', '14.2', 'Mac',
   'com.apple.mgmt.test', NULL, NULL, true, NULL),
  ('DEV3', 'DEV3', 'device', 'Device', 'DEV3', 'SER3', '17.0', 'iPad',
   'com.apple.mgmt.test', '\x0304', 'MAGIC-SECRET-3', false, NULL);
INSERT INTO mdm_enrollments (id, device_id, channel, enrollment_type, udid,
    user_id, user_short_name, topic, push_token, push_magic, enabled)
VALUES ('DEV1:USER1', 'DEV1', 'user', 'User', 'DEV1', 'USER1', 'alice',
        'com.apple.mgmt.test', '\x0506', 'MAGIC-SECRET-U', true);
INSERT INTO mdm_enrollments (id, device_id, channel, enrollment_type,
    enabled)
VALUES (E'odd "id", {with} \\ and ünïcödé', 'ODD', 'device', 'Device',
        true);
INSERT INTO mdm_enrollments (id, device_id, channel, enrollment_type, udid,
    topic, push_token, push_magic, enabled)
SELECT 'BULK-' || lpad(g::text, 6, '0'), 'BULK-' || lpad(g::text, 6, '0'),
       'device', 'Device', 'BULK-' || g, 'com.apple.mgmt.test', '\x01',
       'm', true
FROM generate_series(1, 100000) AS g;
ANALYZE mdm_enrollments;
SQL

# requests

sub api {
    my ($method, $path, %o) = @_;
    my %headers = (Authorization => $AUTH, %{ $o{headers} || {} });
    delete $headers{Authorization} if $o{anonymous};
    my $body = $o{body};
    if (ref $body) {
        $body = $JSON->encode($body);
        $headers{'Content-Type'} //= 'application/json';
    }
    my $r = $t->http($method, "/api/v1/mdm/$path",
                     headers => \%headers,
                     (defined $body ? (body => $body) : ()),
                     timeout => $o{timeout} // 30);
    $r->{json} = eval { $JSON->decode($r->{body}) }
        if ($r->{headers}{'content-type'} // '') =~ /json/;
    return $r;
}

sub is_error {
    my ($r, $status, $re, $name) = @_;
    is($r->{status}, $status, "$name: $status");
    like($r->{json} && $r->{json}{error} // '', $re, "$name: says why")
        or diag $r->{body};
}

###########################################################################
# access control

my $r = api(GET => 'enrollments', anonymous => 1);
is($r->{status}, 401, 'no credential: auth_basic answers 401');

$r = $t->http(GET => '/api/v1/mdm/enrollments', headers => {
    Authorization => 'Basic ' . encode_base64('admin:wrong', '') });
is($r->{status}, 401, 'a wrong password: 401');

$r = $t->http(GET => '/unauthorized/enrollments');
is($r->{status}, 403, 'mdm_api_auth variable empty: 403');
like($r->{body}, qr/"error": "forbidden/, 'with a JSON reason');

$r = $t->http(GET => '/unauthorized/enrollments',
              headers => { 'X-Admin' => 'ops' });
is($r->{status}, 200, 'mdm_api_auth variable set: served');

$r = api(GET => 'enrollments');
is($r->{status}, 200, 'with the credential: 200');
is($r->{headers}{'content-type'}, 'application/json', 'JSON');

###########################################################################
# routing

is_error(api(GET => 'nothing/here'), 404, qr/no such endpoint/,
         'unknown endpoint');
$r = api(GET => 'commands');
is_error($r, 405, qr/not allowed/, 'GET commands');
is($r->{headers}{allow}, 'POST', 'Allow names POST');
is(api(PUT => 'enrollments/DEV1')->{status}, 405, 'PUT an enrollment: 405');

###########################################################################
# enqueue (JSON)

my $subscriber = $t->spawn([ 'redis-cli', '-s', $t->redis_socket,
                             'SUBSCRIBE', 'mdm:push' ], log => 'sub.log');
$t->wait_for(sub { ($t->redis_cli('PUBSUB', 'NUMSUB', 'mdm:push')
                    =~ /\n(\d+)/)[0] }, what => 'the hint subscriber');

$r = api(POST => 'commands', body => {
    enrollment_ids => [ 'DEV1', 'DEV2', 'DEV1' ],
    command => { RequestType => 'DeviceInformation',
                 Queries => [ 'UDID', 'OSVersion' ] } });
is($r->{status}, 200, 'enqueue to two enrollments: 200') or diag $r->{body};
my $uuid = $r->{json}{command_uuid} // '';
like($uuid, qr/^[0-9A-F]{8}-[0-9A-F]{4}-4[0-9A-F]{3}-[89AB][0-9A-F]{3}-[0-9A-F]{12}$/,
     'the server assigned an upper-case UUID v4');
is($r->{json}{request_type}, 'DeviceInformation', 'request_type');
is_deeply($r->{json}{enrollments},
          { DEV1 => { queued => JSON::PP::true },
            DEV2 => { queued => JSON::PP::true } },
          'per-ID results, the repeated ID once');
is($r->{json}{queued}, 2, 'queued: 2');
is($r->{json}{pushed}, 1, 'pushed: 1 (DEV2 has no push token)');

is($t->psql("SELECT string_agg(enrollment_id || '=' || status, ',' "
            . "ORDER BY enrollment_id) FROM mdm_queue "
            . "WHERE command_uuid = '$uuid'"),
   'DEV1=Queued,DEV2=Queued', 'queue rows committed');
my $plist = $t->psql("SELECT convert_from(command, 'UTF8') FROM mdm_commands "
                     . "WHERE command_uuid = '$uuid'");
like($plist, qr{<key>CommandUUID</key>\s*<string>$uuid</string>},
     'the plist carries the CommandUUID');
like($plist, qr{<key>Command</key>\s*<dict>.*<key>RequestType</key>\s*<string>DeviceInformation</string>}s,
     'and the Command dict with its RequestType');
like($plist, qr{<key>Queries</key>\s*<array>\s*<string>UDID</string>}s,
     'and the command keys');
is($t->psql("SELECT string_agg(enrollment_id, ',') FROM mdm_push_requests"),
   'DEV1', 'a push request for DEV1 (the push-request contract)');
$t->wait_for(sub { ($t->read_file('sub.log') // '') =~ /mdm:push/ },
             what => 'the PUBLISH hint on mdm:push');
pass('the push hint was published');
$t->stop_spawned($subscriber);

$t->psql('DELETE FROM mdm_push_requests');

# an ID with quotes, braces, a comma, a backslash and non-ASCII letters

my $odd = "odd \"id\", {with} \\ and \x{fc}n\x{ef}c\x{f6}d\x{e9}";
$r = $t->http(POST => '/api/v1/mdm/commands', headers => {
    Authorization => $AUTH, 'Content-Type' => 'application/json' },
    body => JSON::PP->new->utf8->encode({ enrollment_ids => [ $odd ],
        command => { RequestType => 'ProfileList' } }));
is($r->{status}, 200, 'an ID with quotes, braces and a backslash')
    or diag $r->{body};
is_deeply([ keys %{ JSON::PP->new->utf8->decode($r->{body})->{enrollments} } ],
          [ $odd ], 'comes back the same');
is($t->psql("SELECT count(*) FROM mdm_queue WHERE enrollment_id = "
            . "E'odd \"id\", {with} \\\\ and ünïcödé'"), 1,
   'and is queued under its exact ID');

# options: a given UUID, no push, priority, expiry, data fields

$r = api(POST => 'commands', body => {
    enrollment_ids => [ 'DEV1' ], command_uuid => 'my-uuid-1', push => JSON::PP::false,
    priority => 5, expires_at => '2030-01-01T00:00:00Z',
    command => { RequestType => 'InstallProfile',
                 Payload => encode_base64("<profile/>", '') } });
is($r->{status}, 200, 'enqueue with a given UUID') or diag $r->{body};
is($r->{json}{command_uuid}, 'my-uuid-1', 'the given UUID is kept');
is($r->{json}{pushed}, 0, 'push: false pushes nothing');
is($t->psql('SELECT count(*) FROM mdm_push_requests'), 0,
   'and requests no push');
is($t->psql("SELECT priority || ' ' || to_char(expires_at AT TIME ZONE 'UTC', 'YYYY') "
            . "FROM mdm_commands WHERE command_uuid = 'my-uuid-1'"),
   '5 2030', 'priority and expires_at stored');
like($t->psql("SELECT convert_from(command, 'UTF8') FROM mdm_commands "
              . "WHERE command_uuid = 'my-uuid-1'"),
     qr{<key>Payload</key>\s*<data>\s*PHByb2ZpbGUvPg==\s*</data>},
     'a base64 string in a data field becomes <data>');

is_error(api(POST => 'commands', body => {
    enrollment_ids => [ 'DEV1' ], command_uuid => 'my-uuid-1',
    command => { RequestType => 'DeviceLock' } }),
    409, qr/exists/, 'the same UUID again');

# some and all unknown

$r = api(POST => 'commands', body => {
    enrollment_ids => [ 'DEV2', 'NOPE-1', 'NOPE-2' ],
    command => { RequestType => 'ProfileList' } });
is($r->{status}, 207, 'some IDs unknown: 207');
is_deeply($r->{json}{enrollments}{'NOPE-1'},
          { queued => JSON::PP::false, error => 'unknown enrollment' },
          'an unknown ID says so');
ok($r->{json}{enrollments}{DEV2}{queued}, 'the known one is queued');

my $commands = $t->psql('SELECT count(*) FROM mdm_commands');
$r = api(POST => 'commands', body => {
    enrollment_ids => [ 'NOPE-1', 'NOPE-2' ],
    command => { RequestType => 'ProfileList' } });
is($r->{status}, 404, 'every ID unknown: 404');
is($r->{json}{error}, 'unknown enrollments', 'with a reason');
is($r->{json}{enrollments}{'NOPE-2'}{error}, 'unknown enrollment',
   'and per-ID results');
is($t->psql('SELECT count(*) FROM mdm_commands'), $commands,
   'and nothing was written');

# bad input: 400 with a reason, nothing written

my @bad = (
    [ '{"enrollment_ids": ["DEV1"], "command": ', qr/invalid JSON/,
      'truncated JSON' ],
    [ '["DEV1"]', qr/must be a JSON object/, 'an array body' ],
    [ '', qr/JSON object is required/, 'an empty body' ],
    [ '{"enrollment_ids": ["DEV1"], "enrollment_ids": ["DEV2"], '
      . '"command": {"RequestType": "ProfileList"}}',
      qr/invalid JSON.*duplicate/, 'a duplicate key' ],
    [ { command => { RequestType => 'ProfileList' } },
      qr/"enrollment_ids" is required/, 'no IDs' ],
    [ { enrollment_ids => [], command => { RequestType => 'ProfileList' } },
      qr/"enrollment_ids" is empty/, 'an empty ID list' ],
    [ { enrollment_ids => 'DEV1', command => { RequestType => 'X' } },
      qr/must be an array/, 'IDs not an array' ],
    [ { enrollment_ids => [ 'DEV1', 7 ], command => { RequestType => 'X' } },
      qr/"enrollment_ids"\[1\] is not a string/, 'a number as an ID' ],
    [ { enrollment_ids => [ 'DEV1' ] }, qr/"command" must be an object/,
      'no command' ],
    [ { enrollment_ids => [ 'DEV1' ], command => { RequestType => 42 } },
      qr/non-empty string "RequestType"/, 'RequestType not a string' ],
    [ { enrollment_ids => [ 'DEV1' ], command => { Queries => [] } },
      qr/RequestType/, 'no RequestType' ],
    [ { enrollment_ids => [ 'DEV1' ], push => 'yes',
        command => { RequestType => 'ProfileList' } },
      qr/"push" must be true or false/, 'push not a boolean' ],
    [ { enrollment_ids => [ 'DEV1' ], priority => 1.5,
        command => { RequestType => 'ProfileList' } },
      qr/"priority"/, 'a fractional priority' ],
    [ { enrollment_ids => [ 'DEV1' ], command_uuid => "a\tb",
        command => { RequestType => 'ProfileList' } },
      qr/control characters/, 'a UUID with a control character' ],
    [ { enrollment_ids => [ 'DEV1' ],
        command => { RequestType => 'InstallProfile', Payload => '%%%' } },
      qr/^command: .*Payload/, 'bad base64 in a data field' ],
    [ { enrollment_ids => [ 'DEV1' ],
        command => { RequestType => 'Settings', Settings => [ undef ] } },
      qr/^command: /, 'a null in the command' ],
    [ { enrollment_ids => [ 'DEV1' ], expires_at => 'tomorrow',
        command => { RequestType => 'ProfileList' } },
      qr/expires_at/, 'an expires_at that is no RFC 3339 date' ],
    [ { enrollment_ids => [ 'DEV1' ], expires_at => '2030-02-30T00:00:00Z',
        command => { RequestType => 'ProfileList' } },
      qr/invalid value/, 'an expires_at that does not exist' ],
);
for my $case (@bad) {
    my ($body, $re, $name) = @$case;
    is_error(api(POST => 'commands', body => $body,
                 headers => { 'Content-Type' => 'application/json' }),
             400, $re, $name);
}
is($t->psql('SELECT count(*) FROM mdm_commands'), $commands,
   'bad input wrote nothing');

# enqueue (raw plist)

my $raw = <<'PLIST';
<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<plist version="1.0">
<dict>
    <key>CommandUUID</key>
    <string>raw-uuid-1</string>
    <key>Command</key>
    <dict>
        <key>RequestType</key>
        <string>SecurityInfo</string>
    </dict>
</dict>
</plist>
PLIST

$r = $t->http(POST => '/api/v1/mdm/commands?enrollment_id=DEV1&enrollment_id=DEV2&push=false',
              headers => { Authorization => $AUTH,
                           'Content-Type' => 'application/x-apple-plist' },
              body => $raw);
is($r->{status}, 200, 'a raw plist with the IDs in the query') or diag $r->{body};
my $j = $JSON->decode($r->{body});
is($j->{command_uuid}, 'raw-uuid-1', 'the plist\'s CommandUUID is kept');
is($j->{request_type}, 'SecurityInfo', 'its RequestType read');
is(join(',', sort keys %{ $j->{enrollments} }), 'DEV1,DEV2', 'both queued');

(my $bare = $raw) =~ s{<key>CommandUUID</key>\s*<string>raw-uuid-1</string>}{};
$bare =~ s{<dict>\s*<key>Command</key>\s*(<dict>.*?</dict>)\s*</dict>}{$1}s;
$r = $t->http(POST => '/api/v1/mdm/commands?enrollment_ids=DEV1,NOPE',
              headers => { Authorization => $AUTH,
                           'Content-Type' => 'application/x-apple-plist' },
              body => $bare);
is($r->{status}, 207, 'the Command dict alone, one ID unknown: 207')
    or diag $r->{body};
$j = $JSON->decode($r->{body});
like($j->{command_uuid}, qr/^[0-9A-F-]{36}$/, 'a UUID was assigned');
like($t->psql("SELECT convert_from(command, 'UTF8') FROM mdm_commands "
              . "WHERE command_uuid = '$j->{command_uuid}'"),
     qr{<key>CommandUUID</key>\s*<string>$j->{command_uuid}</string>},
     'and written into the stored plist');

# a binary plist, as plistutil writes it
$t->write_file('bin-in.plist', $raw =~ s/raw-uuid-1/bin-uuid-1/r);
$t->run_command([ 'plistutil', '-i', $t->path('bin-in.plist'),
                  '-o', $t->path('bin.plist'), '-f', 'bin' ]);
like($t->read_file('bin.plist') // '', qr/^bplist00/, 'a binary plist');
$r = $t->http(POST => '/api/v1/mdm/commands?enrollment_id=DEV1&push=0',
              headers => { Authorization => $AUTH,
                           'Content-Type' => 'application/x-apple-plist' },
              body_file => $t->path('bin.plist'));
is($r->{status}, 200, 'a binary plist is taken') or diag $r->{body};
like($t->psql("SELECT convert_from(command, 'UTF8') FROM mdm_commands "
              . "WHERE command_uuid = 'bin-uuid-1'"),
     qr{^<\?xml.*<string>SecurityInfo</string>}s, 'and stored as XML');

$r = $t->http(POST => '/api/v1/mdm/commands?enrollment_id=DEV1',
              headers => { Authorization => $AUTH,
                           'Content-Type' => 'application/x-apple-plist' },
              body => '<plist><dict><key>Command</key>');
is($r->{status}, 400, 'a broken plist: 400');
like($r->{body}, qr/invalid plist/, 'says so');

$r = $t->http(POST => '/api/v1/mdm/commands',
              headers => { Authorization => $AUTH,
                           'Content-Type' => 'application/x-apple-plist' },
              body => $raw =~ s/raw-uuid-1/raw-uuid-2/r);
is($r->{status}, 400, 'a raw plist without IDs: 400');
like($r->{body}, qr/no enrollment IDs/, 'says so');

# the same in JSON: command_plist

$r = api(POST => 'commands', body => {
    enrollment_ids => [ 'DEV2' ], push => JSON::PP::false,
    command_plist => $raw =~ s/raw-uuid-1/raw-uuid-3/r });
is($r->{status}, 200, 'command_plist in JSON') or diag $r->{body};
is($r->{json}{command_uuid}, 'raw-uuid-3', 'its CommandUUID');

###########################################################################
# a huge ID list: 100,000 IDs in one call, the body in a temporary file

my @bulk = map { sprintf 'BULK-%06d', $_ } 1 .. 100000;
$r = api(POST => 'commands', timeout => 60, body => {
    enrollment_ids => [ @bulk, 'NOPE-X' ], push => JSON::PP::false,
    command => { RequestType => 'DeviceInformation', Queries => [ 'UDID' ] } });
is($r->{status}, 207, '100,000 known IDs and one unknown: 207')
    or diag substr($r->{body}, 0, 500);
is($r->{json}{queued}, 100000, 'queued: 100000');
is(scalar keys %{ $r->{json}{enrollments} }, 100001,
   'a result for every ID');
is($r->{json}{enrollments}{'NOPE-X'}{error}, 'unknown enrollment',
   'the unknown one named');
my $bulk_uuid = $r->{json}{command_uuid};
is($t->psql("SELECT count(*) FROM mdm_queue WHERE command_uuid = '$bulk_uuid'"),
   100000, 'in one call, 100,000 rows committed');
diag sprintf 'enqueue of 100,000: %.3f s', $r->{time};

$r = api(POST => 'commands', body => {
    enrollment_ids => [ map { "X$_" } 1 .. 10 ],
    command => { RequestType => 'ProfileList' } });
is($r->{status}, 404, 'ten unknown IDs: 404');

###########################################################################
# command status and results

my $report = <<'PLIST';
<?xml version="1.0" encoding="UTF-8"?>
<plist version="1.0">
<dict>
    <key>CommandUUID</key><string>UUID</string>
    <key>QueryResponses</key>
    <dict>
        <key>OSVersion</key><string>17.4</string>
        <key>UDID</key><string>DEV1</string>
    </dict>
    <key>Status</key><string>Acknowledged</string>
    <key>UDID</key><string>DEV1</string>
</dict>
</plist>
PLIST
$report =~ s/UUID</$uuid</;
(my $report_sql = $report) =~ s/'/''/g;
$t->psql("UPDATE mdm_queue SET status = 'Acknowledged', "
         . "result = convert_to('$report_sql', 'UTF8') "
         . "WHERE command_uuid = '$uuid' AND enrollment_id = 'DEV1'");

$r = api(GET => "commands/$uuid");
is($r->{status}, 200, 'GET a command') or diag $r->{body};
is($r->{json}{command_uuid}, $uuid, 'command_uuid');
is($r->{json}{request_type}, 'DeviceInformation', 'request_type');
is_deeply($r->{json}{counts}, { Acknowledged => 1, Queued => 1 },
          'counts by status');
my %by = map { $_->{enrollment_id} => $_ } @{ $r->{json}{enrollments} };
is($by{DEV1}{status}, 'Acknowledged', 'DEV1 Acknowledged');
is($by{DEV1}{result}{QueryResponses}{OSVersion}, '17.4',
   'its result as JSON');
is($by{DEV1}{result}{Status}, 'Acknowledged', 'the whole report');
like($by{DEV1}{updated_at}, qr/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$/,
     'updated_at in RFC 3339 UTC');
is($by{DEV2}{status}, 'Queued', 'DEV2 still Queued');
is($by{DEV2}{result}, undef, 'without a result');
ok(!exists $by{DEV1}{result_raw}, 'no raw result unless asked');
is($r->{json}{next}, undef, 'one page');

$r = api(GET => "commands/$uuid?raw=1");
%by = map { $_->{enrollment_id} => $_ } @{ $r->{json}{enrollments} };
is(decode_base64($by{DEV1}{result_raw} // ''), $report,
   'raw=1: the report\'s own bytes in base64');

$r = api(GET => "commands/$uuid?limit=1");
is(scalar @{ $r->{json}{enrollments} }, 1, 'limit=1: one entry');
is($r->{json}{next}, 'DEV1', 'next: the last ID');
$r = api(GET => "commands/$uuid?limit=1&after=DEV1");
is($r->{json}{enrollments}[0]{enrollment_id}, 'DEV2', 'after=DEV1: DEV2');
$r = api(GET => "commands/$uuid?enrollment_id=DEV2");
is(scalar @{ $r->{json}{enrollments} }, 1, 'enrollment_id filter');
is_error(api(GET => "commands/$uuid?limit=0"), 400, qr/limit/, 'limit=0');
is_error(api(GET => 'commands/NO-SUCH-UUID'), 404, qr/unknown command/,
         'an unknown command');

$r = api(GET => "commands/$uuid/results/DEV1");
is($r->{status}, 200, 'the raw result');
is($r->{headers}{'content-type'}, 'application/x-apple-plist', 'as a plist');
is($r->{body}, $report, 'byte for byte');
is_error(api(GET => "commands/$uuid/results/DEV2"), 404, qr/no result yet/,
         'no result yet');
is_error(api(GET => "commands/$uuid/results/NOPE"), 404, qr/not queued/,
         'not queued for that enrollment');

$r = api(GET => "commands/$bulk_uuid?limit=10000");
is(scalar @{ $r->{json}{enrollments} }, 10000, 'a page of 10,000');
is($r->{json}{counts}{Queued}, 100000, 'counts over all 100,000');

# an expired command reads Expired

$t->psql("UPDATE mdm_commands SET expires_at = now() - interval '1 minute' "
         . "WHERE command_uuid = 'raw-uuid-3'");
$r = api(GET => 'commands/raw-uuid-3');
is($r->{json}{enrollments}[0]{status}, 'Expired',
   'a pending command past expires_at reads Expired');

###########################################################################
# queues: list, cancel one, clear, cancel a command everywhere

$r = api(GET => 'enrollments/DEV1/commands');
is($r->{status}, 200, 'the queue of DEV1') or diag $r->{body};
my @q = map { $_->{command_uuid} } @{ $r->{json}{commands} };
is($q[0], 'my-uuid-1', 'the priority 5 command first');
ok(!grep({ $_ eq $uuid } @q), 'the acknowledged one is not pending');
is($r->{json}{commands}[0]{request_type}, 'InstallProfile',
   'with its request type');
$r = api(GET => 'enrollments/DEV1/commands?all=1');
ok(grep({ $_->{command_uuid} eq $uuid && $_->{status} eq 'Acknowledged' }
        @{ $r->{json}{commands} }), 'all=1 lists answered ones too');
$r = api(GET => 'enrollments/DEV1/commands?limit=1');
is($r->{json}{next}, 'my-uuid-1', 'paged: next');
$r = api(GET => 'enrollments/DEV1/commands?limit=1&after=my-uuid-1');
isnt($r->{json}{commands}[0]{command_uuid}, 'my-uuid-1', 'after the cursor');
is_error(api(GET => 'enrollments/NOPE/commands'), 404,
         qr/unknown enrollment/, 'the queue of an unknown enrollment');

$r = api(DELETE => 'enrollments/DEV1/commands/my-uuid-1');
is($r->{status}, 200, 'cancel one queued command');
is($r->{json}{status}, 'Cancelled', 'Cancelled');
is($r->{json}{previous_status}, 'Queued', 'it was Queued');
is($t->psql("SELECT status FROM mdm_queue WHERE command_uuid = 'my-uuid-1'"),
   'Cancelled', 'in the database');
is_error(api(DELETE => 'enrollments/DEV1/commands/my-uuid-1'), 409,
         qr/no longer pending/, 'cancel it again');
is_error(api(DELETE => "enrollments/DEV1/commands/$uuid"), 409,
         qr/Acknowledged/, 'cancel an answered one');
is_error(api(DELETE => 'enrollments/DEV1/commands/NOPE'), 404,
         qr/not in the queue/, 'cancel an unknown one');

my $pending = $t->psql("SELECT count(*) FROM mdm_queue WHERE enrollment_id "
                       . "= 'DEV2' AND status IN ('Queued', 'NotNow')");
$r = api(DELETE => 'enrollments/DEV2/commands');
is($r->{status}, 200, 'clear the queue of DEV2');
is($r->{json}{cancelled}, $pending, "cancelled: $pending");
is($t->psql("SELECT count(*) FROM mdm_queue WHERE enrollment_id = 'DEV2' "
            . "AND status IN ('Queued', 'NotNow')"), 0, 'nothing pending');
is_error(api(DELETE => 'enrollments/NOPE/commands'), 404,
         qr/unknown enrollment/, 'clear an unknown queue');

$r = api(DELETE => "commands/$bulk_uuid");
is($r->{status}, 200, 'cancel a command everywhere');
is($r->{json}{cancelled}, 100000, 'cancelled: 100000');
is_error(api(DELETE => 'commands/NOPE'), 404, qr/unknown command/,
         'cancel an unknown command');

###########################################################################
# enrollments

$t->psql("UPDATE mdm_enrollments SET bootstrap_token = '\\x0a0b', "
         . "bootstrap_token_at = now() WHERE id = 'DEV2'");

$r = api(GET => 'enrollments?limit=2');
is($r->{status}, 200, 'list enrollments');
is(scalar @{ $r->{json}{enrollments} }, 2, 'limit=2');
is($r->{json}{next}, $r->{json}{enrollments}[1]{enrollment_id},
   'next: the last ID');
$r = api(GET => "enrollments?limit=2&after=$r->{json}{next}");
is(scalar @{ $r->{json}{enrollments} }, 2, 'the next page');

$r = api(GET => 'enrollments?serial_number=SER1');
is(join(',', map { $_->{enrollment_id} } @{ $r->{json}{enrollments} }),
   'DEV1', 'filter by serial number');
$r = api(GET => 'enrollments?device_id=DEV1');
is(join(',', map { $_->{enrollment_id} } @{ $r->{json}{enrollments} }),
   'DEV1,DEV1:USER1', 'filter by device: both channels');
$r = api(GET => 'enrollments?channel=user');
is(join(',', map { $_->{enrollment_id} } @{ $r->{json}{enrollments} }),
   'DEV1:USER1', 'filter by channel');
$r = api(GET => 'enrollments?enabled=false');
is(join(',', map { $_->{enrollment_id} } @{ $r->{json}{enrollments} }),
   'DEV3', 'filter by enabled');
is_error(api(GET => 'enrollments?enabled=maybe'), 400, qr/enabled/,
         'a bad filter');
is_error(api(GET => 'enrollments?limit=100000'), 400, qr/limit/,
         'a limit too high');

$r = api(GET => 'enrollments/DEV1');
is($r->{status}, 200, 'one enrollment') or diag $r->{body};
my $e = $r->{json};
is($e->{enrollment_id}, 'DEV1', 'its ID');
is($e->{serial_number}, 'SER1', 'serial');
is($e->{os_version}, '17.4', 'OS');
is($e->{topic}, 'com.apple.mgmt.test', 'topic');
ok($e->{enabled}, 'enabled');
like($e->{last_seen_at}, qr/^\d{4}-/, 'last seen');
is($e->{queue_depth},
   $t->psql("SELECT count(*) FROM mdm_queue WHERE enrollment_id = 'DEV1' "
            . "AND status IN ('Queued', 'NotNow')"),
   'queue depth: its pending commands');
ok($e->{push_token}, 'push token present');
ok(!$e->{bootstrap_token}, 'no bootstrap token');
is_deeply($e->{user_channels}, [ 'DEV1:USER1' ], 'its user channel');
unlike($r->{body}, qr/MAGIC-SECRET/, 'PushMagic never shown');

$r = api(GET => 'enrollments/DEV2');
ok($r->{json}{bootstrap_token}, 'bootstrap token present on DEV2');
like($r->{json}{bootstrap_token_at}, qr/^\d{4}-/, 'and when it came');
unlike($r->{body}, qr/CgsK|0a0b/, 'but not its value');

$r = api(GET => 'enrollments/DEV1:USER1');
is($r->{json}{channel}, 'user', 'a user channel by its ID');
is($r->{json}{user_short_name}, 'alice', 'with its user');

is_error(api(GET => 'enrollments/NOPE'), 404, qr/unknown enrollment/,
         'an unknown enrollment');

###########################################################################
# push now

$t->psql('DELETE FROM mdm_push_requests');
$r = api(POST => 'push', body => {
    enrollment_ids => [ 'DEV1', 'DEV1:USER1', 'DEV2', 'DEV3', 'NOPE' ] });
is($r->{status}, 207, 'push: some cannot be pushed: 207') or diag $r->{body};
is_deeply($r->{json}{enrollments}, {
    'DEV1' => { push => JSON::PP::true },
    'DEV1:USER1' => { push => JSON::PP::true },
    'DEV2' => { push => JSON::PP::false, error => 'no push token' },
    'DEV3' => { push => JSON::PP::false, error => 'enrollment disabled' },
    'NOPE' => { push => JSON::PP::false, error => 'unknown enrollment' },
}, 'a reason for each');
is($r->{json}{requested}, 2, 'requested: 2');
is($t->psql("SELECT string_agg(enrollment_id, ',' ORDER BY enrollment_id) "
            . "FROM mdm_push_requests"), 'DEV1,DEV1:USER1',
   'push requests recorded');
is(api(POST => 'push', body => { enrollment_ids => [ 'DEV1' ] })->{status},
   200, 'push: all pushed: 200');
is($t->psql("SELECT requests FROM mdm_push_requests WHERE enrollment_id = 'DEV1'"),
   2, 'requests for one channel coalesce');
is_error(api(POST => 'push', body => { enrollment_ids => [ 'A', 'B' ] }),
         404, qr/unknown enrollments/, 'push: all unknown');
is_error(api(POST => 'push', body => { ids => [ 'DEV1' ] }), 400,
         qr/enrollment_ids/, 'push: no IDs');
is_error(api(POST => 'push', body => '{'), 400, qr/invalid JSON/,
         'push: bad JSON');

###########################################################################
# challenges

$r = api(POST => 'challenges');
is($r->{status}, 200, 'mint a challenge, no body') or diag $r->{body};
my $challenge = $r->{json}{challenge} // '';
like($challenge, qr/^[0-9a-f]{48}$/, 'a fresh challenge');
like($r->{json}{expires_at}, qr/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/,
     'expires_at');
is($t->psql("SELECT purpose || ' ' || round(extract(epoch FROM "
            . "expires_at - created_at) / 60) FROM mdm_challenges WHERE "
            . "digest = decode('" . sha256_hex($challenge) . "', 'hex')"),
   'api 60', 'stored as its digest, purpose api, the default 1 h');
unlike($t->read_file('error.log'), qr/$challenge/, 'never logged');

$r = api(POST => 'challenges',
         body => { udid => 'DEV9', serial => 'SER9', ttl => 120 });
is($r->{status}, 200, 'a challenge for one device');
like($t->psql("SELECT udid || ' ' || serial_number || ' ' || round(extract("
              . "epoch FROM expires_at - now())) FROM mdm_challenges "
              . "WHERE udid = 'DEV9'"), qr/^DEV9 SER9 1(19|20)$/,
     'bound, with its ttl');
is_error(api(POST => 'challenges', body => { ttl => 7201 }), 400,
         qr/ttl/, 'a ttl over the maximum');
is_error(api(POST => 'challenges', body => { udid => 5 }), 400,
         qr/udid/, 'a udid that is not a string');
is_error(api(POST => 'challenges', body => '[1'), 400, qr/invalid JSON/,
         'challenges: bad JSON');

###########################################################################
# revocation

$t->psql(<<'SQL');
INSERT INTO mdm_certificates (serial, sha256, subject, not_before, not_after,
    der, source)
VALUES (5001, '\x01', 'CN=DEV1', now() - interval '1 day',
        now() + interval '1 year', '\x30', 'challenge'),
       (5002, '\x02', 'CN=DEV1 old', now() - interval '2 day',
        now() + interval '1 year', '\x30', 'challenge'),
       (5003, '\x03', 'CN=DEV2', now() - interval '1 day',
        now() + interval '1 year', '\x30', 'challenge');
INSERT INTO mdm_cert_bindings (sha256, enrollment_id, not_after)
VALUES ('\x01', 'DEV1', now() + interval '1 year'),
       ('\x02', 'DEV1', now() + interval '1 year');
SQL

$r = api(GET => 'enrollments/DEV1');
is(scalar @{ $r->{json}{certificates} }, 2, 'an enrollment lists its '
   . 'certificates');

$r = api(POST => 'certificates/revoke',
         body => { serials => [ 5003, '0x1388' ], reason => 'keyCompromise' });
is($r->{status}, 207, 'revoke a serial and an unknown one: 207')
    or diag $r->{body};
ok($r->{json}{certificates}{5003}{revoked}, '5003 revoked');
is($r->{json}{certificates}{5000}{error}, 'unknown certificate',
   '0x1388 = 5000 unknown');
is($t->psql('SELECT revocation_reason FROM mdm_certificates '
            . 'WHERE serial = 5003 AND revoked_at IS NOT NULL'), 1,
   'revoked_at and the reason stored');
$r = api(POST => 'certificates/revoke', body => { serials => [ '5003' ] });
is($r->{status}, 200, 'again: 200');
ok($r->{json}{certificates}{5003}{already_revoked}, 'already revoked');
is($r->{json}{revoked}, 0, 'nothing newly revoked');

$r = api(POST => 'certificates/revoke',
         body => { enrollment_ids => [ 'DEV1:USER1', 'NOPE' ] });
is($r->{status}, 207, 'revoke by enrollment (a user channel) and an unknown '
   . 'one: 207') or diag $r->{body};
is(join(',', sort map { $_->{serial} }
        @{ $r->{json}{enrollments}{'DEV1:USER1'}{certificates} }),
   '5001,5002', 'the device channel\'s certificates');
is($r->{json}{enrollments}{NOPE}{error}, 'unknown enrollment',
   'the unknown one');
is($r->{json}{revoked}, 2, 'two revoked');
is($t->psql('SELECT count(*) FROM mdm_certificates WHERE revoked_at IS NULL'),
   0, 'all revoked in the database');

is_error(api(POST => 'certificates/revoke', body => { serials => [ 9999 ] }),
         404, qr/.*/, 'revoke an unknown serial');
is_error(api(POST => 'certificates/revoke', body => { serials => [ 'x' ] }),
         400, qr/serial/, 'a bad serial');
is_error(api(POST => 'certificates/revoke', body => { serials => [ 5001 ],
                                                     reason => 'certificateHold' }),
         400, qr/CRLReason/, 'a reason that is no revocation');
is_error(api(POST => 'certificates/revoke', body => {}), 400,
         qr/serials/, 'nothing to revoke');

###########################################################################
# HEAD, trailing slashes

$r = $t->http(HEAD => '/api/v1/mdm/enrollments/DEV1/',
              headers => { Authorization => $AUTH });
is($r->{status}, 200, 'HEAD with a trailing slash');
is($r->{body}, '', 'no body');

###########################################################################
# the queue's references (008_api.sql): checked per statement

like($t->run_command([ 'psql', '-X', '-v', 'ON_ERROR_STOP=1', '-d',
                       $t->pg_conninfo, '-c',
                       "INSERT INTO mdm_queue (enrollment_id, command_uuid) "
                       . "VALUES ('NOPE', '$uuid')" ])->{stderr},
     qr/mdm_queue: no enrollment 'NOPE'/, 'a queue row needs its enrollment');
like($t->run_command([ 'psql', '-X', '-d', $t->pg_conninfo, '-c',
                       "INSERT INTO mdm_queue (enrollment_id, command_uuid) "
                       . "VALUES ('DEV3', 'NOPE')" ])->{stderr},
     qr/mdm_queue: no command 'NOPE'/, 'and its command');
like($t->run_command([ 'psql', '-X', '-d', $t->pg_conninfo, '-c',
                       "UPDATE mdm_queue SET enrollment_id = 'DEV3' "
                       . "WHERE command_uuid = '$uuid'" ])->{stderr},
     qr/do not change/, 'its keys do not change');
$t->psql("DELETE FROM mdm_commands WHERE command_uuid = 'raw-uuid-1'");
is($t->psql("SELECT count(*) FROM mdm_queue WHERE command_uuid = "
            . "'raw-uuid-1'"), 0, 'deleting a command deletes its rows');
$t->psql("DELETE FROM mdm_enrollments WHERE id = 'DEV2'");
is($t->psql("SELECT count(*) FROM mdm_queue WHERE enrollment_id = 'DEV2'"),
   0, 'deleting an enrollment deletes its rows');

###########################################################################
# PostgreSQL down: 503 with Retry-After, at once

$t->stop_postgres;
$r = api(GET => 'enrollments');
is($r->{status}, 503, 'database down: 503');
is($r->{headers}{'retry-after'}, '9', 'with Retry-After');
$r = api(POST => 'commands', body => { enrollment_ids => [ 'DEV1' ],
                                       command => { RequestType => 'X' } });
is($r->{status}, 503, 'enqueue with the database down: 503');
$t->start_postgres;
$t->wait_for(sub { api(GET => 'enrollments/DEV1')->{status} == 200 },
             what => 'the API to work again');
pass('the API works again after PostgreSQL restarted');

my @alerts = $t->log_alerts(from => $mark);
is(scalar @alerts, 0, 'no alerts in the error log') or diag "@alerts";

done_testing;
