#!/usr/bin/perl
# APNs push: nginx -t and the push certificates, the request APNs gets
# (path, headers, body, client certificate, HTTP/2), what each answer does
# (200, 400/410, 429/500, 403), coalescing, one connection for many pushes,
# and requests written while the helper is dead.
#
# The poll interval is an hour here: every push below is started by the
# Redis hint, the helper's own timers or its start.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use JSON::PP ();
use Time::HiRes qw(time);
use MDM::Test;
use MDM::FakeAPNs;

my $t = MDM::Test->new(name => 'apns')->plan_skip_unless_module;

# upper bounds on times stretch like every deadline (sanitizer builds)
my $scale = $ENV{MDM_TIMEOUT_SCALE} || 1;

$t->start_postgres;
$t->start_redis;

my $apns = MDM::FakeAPNs->new($t);
my $push = $apns->push_cert;
my $topic = $push->{topic};

my $module = <<"EOF";
    mdm_postgres "%%PG%% sslmode=disable";
    mdm_redis %%REDIS%%;
    mdm_helper_path %%TESTDIR%%/helper;

    mdm_apns_certificate $push->{cert};
    mdm_apns_certificate_key $push->{key};
    mdm_apns_endpoint ${\ $apns->url };
    mdm_apns_trusted_certificate ${\ $apns->tls_ca };
    mdm_apns_expiration 1d;
    mdm_apns_poll_interval 1h;
    mdm_apns_coalesce 2s;
    mdm_apns_backoff 200ms 400ms;
    mdm_apns_max_attempts 3;

    server {
        listen 127.0.0.1:%%PORT_0%%;
        location = /apns { mdm_apns_status; }
    }
EOF

###########################################################################
# nginx -t: only MDM push certificates, each with its key

sub conf_with {
    my ($from, $to) = @_;
    my $conf = $module;
    $conf =~ s/\Q$from\E/$to/ or die "no $from in the configuration\n";
    return $apns->server_block . $conf;
}

my $vectors = $t->vectors_dir . '/apns';
my ($st, $out);

$t->write_conf(conf_with("mdm_apns_certificate $push->{cert}",
    "mdm_apns_certificate $vectors/micromdm_mock_push_cert_no_uid.pem"));
($st, $out) = $t->nginx_test;
isnt($st, 0, 'nginx -t refuses a push certificate without a UID');
like($out, qr/"mdm_apns_certificate" .*no_uid\.pem" is not an MDM push/,
     'the message names the directive and the file');

$t->write_conf(conf_with("mdm_apns_certificate $push->{cert}",
    "mdm_apns_certificate $vectors/micromdm_mock_push_cert_wrong_uid_prefix.pem"));
($st, $out) = $t->nginx_test;
isnt($st, 0, 'nginx -t refuses a UID without the com.apple.mgmt. prefix');
like($out, qr/"mdm_apns_certificate" .*com\.apple\.mgmt\./,
     'the message names the directive and the prefix');

my $other = $t->make_cert(ca => $t->make_ca(name => 'other'), cn => 'x');
$t->write_conf(conf_with("mdm_apns_certificate_key $push->{key}",
                         "mdm_apns_certificate_key $other->{key}"));
($st, $out) = $t->nginx_test;
isnt($st, 0, 'nginx -t refuses a key that is not the certificate\'s');
like($out, qr/"mdm_apns_certificate_key" .* is not the key of/,
     'the message says so');

$t->write_conf(conf_with("mdm_apns_certificate_key $push->{key};", ''));
($st, $out) = $t->nginx_test;
isnt($st, 0, 'nginx -t refuses a certificate without a key');
like($out, qr/has no "mdm_apns_certificate_key"/, 'the message says so');

$t->write_conf(conf_with('mdm_apns_endpoint ' . $apns->url,
                         'mdm_apns_endpoint http://127.0.0.1:1'));
($st, $out) = $t->nginx_test;
isnt($st, 0, 'nginx -t refuses an endpoint that is not https');
like($out, qr/invalid "mdm_apns_endpoint"/, 'the message names it');

my $soon = $apns->push_cert(cert => { not_after => '+10d' });
$t->write_conf(conf_with("mdm_apns_certificate $push->{cert};\n"
                         . "    mdm_apns_certificate_key $push->{key};",
                         "mdm_apns_certificate $soon->{cert};\n"
                         . "    mdm_apns_certificate_key $soon->{key};"));
($st, $out) = $t->nginx_test;
is($st, 0, 'a certificate that expires soon is accepted') or diag $out;
like($out, qr/\[warn\].*"\Q$soon->{topic}\E" expires in (9|10) days/,
     'with a warning that names its topic and the days left');

$t->write_conf($apns->server_block . $module);
($st, $out) = $t->nginx_test;
is($st, 0, 'nginx -t accepts the push certificate') or diag $out;
unlike($out, qr/\[warn\]/, 'without a warning');

###########################################################################
# start: the helper applies the schema and starts the push task

my $run_mark = $t->log_mark;
$t->run;
$apns->start;

$t->wait_for_log(qr/mdm apns push started/, 20);
$t->wait_for(sub {
    $t->psql("SELECT to_regproc('mdm_push_request') IS NOT NULL") eq 't'
}, what => 'the push schema');
$t->wait_for_log(qr/mdm apns hint subscribed/, 10);

my $n_enroll = 0;

# an enrollment whose token starts with $kind (see MDM::FakeAPNs)
sub enroll {
    my ($kind, %o) = @_;
    my $i = ++$n_enroll;
    my $id = $o{id} // "E$i";
    my $token = $kind . sprintf('%062x', $i);
    my $topic_ = $o{topic} // $topic;
    my $magic = $o{magic} // "magic-$i";
    $t->psql(<<"EOF");
INSERT INTO mdm_enrollments (id, device_id, channel, enrollment_type,
    enabled, topic, push_token, push_magic, last_seen_at)
VALUES ('$id', '$id', 'device', 'Device', true, '$topic_',
        decode('$token', 'hex'), '$magic', now());
EOF
    return { id => $id, token => $token, magic => $magic };
}

# as many at once, in one statement
sub enroll_many {
    my ($kind, $n) = @_;
    my @e = map {
        my $i = ++$n_enroll;
        { id => "E$i", token => $kind . sprintf('%062x', $i),
          magic => "magic-$i" }
    } 1 .. $n;
    $t->psql("INSERT INTO mdm_enrollments (id, device_id, channel, "
             . "enrollment_type, enabled, topic, push_token, push_magic, "
             . "last_seen_at) VALUES "
             . join(', ', map {
                   "('$_->{id}', '$_->{id}', 'device', 'Device', true, "
                   . "'$topic', decode('$_->{token}', 'hex'), "
                   . "'$_->{magic}', now())" } @e));
    return @e;
}

# the writers' contract: record the requests, then hint
sub request_push {
    my (@ids) = @_;
    my $list = join ',', map { "'$_'" } @ids;
    my $n = $t->psql("SELECT mdm_push_request(ARRAY[$list])");
    $t->redis_cli('PUBLISH', 'mdm:push', '');
    return $n;
}

sub status {
    my $r = $t->http(GET => '/apns');
    return JSON::PP->new->decode($r->{body});
}

sub wait_pushes {
    my ($e, $n, %o) = @_;
    $t->wait_for(sub { $apns->count($e->{token}) >= $n },
                 what => "$n push(es) to $e->{id}", %o,
                 diag => sub { $t->log_tail });
}

###########################################################################
# a push: path, headers, body, client certificate, HTTP/2; 200 records
# the apns-id

my $e = enroll('00', magic => 'magic "quoted" \\ one');
my $start = time;
is(request_push($e->{id}), 1, 'mdm_push_request() counts the push');
wait_pushes($e, 1);
my $latency = time - $start;
cmp_ok($latency, '<', 1 * $scale,
       "the hint starts the push at once (${latency}s)");

my ($p) = $apns->pushes($e->{token});
is($p->{method}, 'POST', 'POST');
is($p->{path}, "/3/device/$e->{token}", 'to /3/device/<token in hex>');
is($p->{protocol}, 'HTTP/2.0', 'over HTTP/2');
is($p->{body}, '{"mdm":"magic \\"quoted\\" \\\\ one"}',
   'body {"mdm": PushMagic}, JSON-escaped');
is($p->{headers}{'apns-push-type'}, 'mdm', 'apns-push-type: mdm');
is($p->{headers}{'apns-topic'}, $topic, 'apns-topic: the certificate UID');
is($p->{headers}{'apns-priority'}, '10', 'apns-priority: 10');
is($p->{headers}{'content-type'}, 'application/json',
   'content-type: application/json');
cmp_ok(abs($p->{headers}{'apns-expiration'} - (time + 86400)), '<', 60,
       'apns-expiration: now + mdm_apns_expiration');
ok(!exists $p->{headers}{accept}, 'no Accept header');
like($p->{dn}, qr/UID=\Q$topic\E/, 'client certificate: the push certificate');

$t->wait_for(sub {
    $t->psql("SELECT last_push_id FROM mdm_enrollments WHERE id = '$e->{id}'")
        eq $p->{apns_id}
}, what => 'the apns-id to be recorded');
pass('200: the apns-id is recorded');
is($t->psql("SELECT count(*) FROM mdm_push_requests"), 0,
   'and the request is done');

###########################################################################
# 400 BadDeviceToken and 410 Unregistered: the token is marked invalid and
# no push follows until a TokenUpdate

my $bad = enroll('40');
my $gone = enroll('41');
request_push($bad->{id}, $gone->{id});
wait_pushes($bad, 1);
wait_pushes($gone, 1);

$t->wait_for(sub {
    $t->psql("SELECT count(*) FROM mdm_enrollments WHERE id IN "
             . "('$bad->{id}', '$gone->{id}') "
             . "AND push_token_invalid_at IS NOT NULL") == 2
}, what => 'the tokens to be marked invalid');
is($t->psql("SELECT last_push_error FROM mdm_enrollments "
            . "WHERE id = '$bad->{id}'"), 'BadDeviceToken',
   '400: token invalid, reason recorded');
is($t->psql("SELECT last_push_error FROM mdm_enrollments "
            . "WHERE id = '$gone->{id}'"), 'Unregistered',
   '410: token invalid, reason recorded');

is(request_push($bad->{id}, $gone->{id}), 0,
   'mdm_push_request() skips an invalid token');

# even a request row written by hand is dropped without a push
$t->psql("INSERT INTO mdm_push_requests (enrollment_id) "
         . "VALUES ('$bad->{id}')");
my $marker = enroll('00');
request_push($marker->{id});
wait_pushes($marker, 1);
$t->wait_for(sub { $t->psql('SELECT count(*) FROM mdm_push_requests') == 0 },
             what => 'the request for an invalid token to be dropped');
is($apns->count($bad->{token}), 1, 'no further push to an invalid token');
is($apns->count($gone->{token}), 1, 'nor to an unregistered one');

# an answer that comes before the request body went out (APNs may answer
# an error from the headers alone) counts at once: no retry, no waiting
# for the transfer's timeout

my $early = enroll('45');
$start = time;
request_push($early->{id});
$t->wait_for(sub {
    $t->psql("SELECT last_push_error FROM mdm_enrollments "
             . "WHERE id = '$early->{id}'") eq 'Unregistered'
}, what => 'the early answer to be recorded');
my $took = time - $start;
cmp_ok($took, '<', 3 * $scale,
       "an early answer is taken (${took}s, timeout 10s)");
like($t->read_file('apns-access.log'), qr{ /3/device/$early->{token} 410$}m,
     'nginx answered it itself');
is($t->psql("SELECT count(*) FROM mdm_push_requests "
            . "WHERE enrollment_id = '$early->{id}'"), 0, 'and not retried');

###########################################################################
# 429 and 500: retried with back-off until it works

my $busy = enroll('42');
my $down = enroll('50');
request_push($busy->{id}, $down->{id});
wait_pushes($busy, 3, timeout => 10);
wait_pushes($down, 3, timeout => 10);

for my $c ([ $busy, 429 ], [ $down, 500 ]) {
    my ($en, $code) = @$c;
    my @p = $apns->pushes($en->{token});
    is_deeply([ map { $_->{status} } @p ], [ $code, $code, 200 ],
              "$code twice, then 200");
    cmp_ok($p[1]{time} - $p[0]{time}, '>=', 0.09,
           "$code: the retry waited (back-off with jitter)");
    cmp_ok($p[2]{time} - $p[1]{time}, '>=', 0.18,
           "$code: the next waited longer");
    $t->wait_for(sub {
        $t->psql("SELECT last_push_id FROM mdm_enrollments "
                 . "WHERE id = '$en->{id}'") eq $p[2]{apns_id}
    }, what => "the apns-id of $en->{id}");
    pass("$code: the final apns-id is recorded");
}

###########################################################################
# 403: a certificate problem raises an error line and the status flag;
# the request is retried, then given up after mdm_apns_max_attempts

my $mark = $t->log_mark;
my $forbidden = enroll('43');
request_push($forbidden->{id});
my $line = $t->wait_for_log(qr/mdm apns refused the push certificate/, 10,
                            from => $mark);
like($line, qr/\[error\].*"\Q$topic\E": 403 BadCertificate/,
     '403: an error line names the topic and the reason');
ok(status()->{certificate_error}, 'status: certificate_error is true');

wait_pushes($forbidden, 3);
$t->wait_for_log(qr/gave up pushing to enrollment "$forbidden->{id}" after 3/,
                 10, from => $mark);
$t->wait_for(sub { $t->psql('SELECT count(*) FROM mdm_push_requests') == 0 },
             what => 'the 403 request to be given up');
pass('given up after mdm_apns_max_attempts');

$marker = enroll('00');
request_push($marker->{id});
wait_pushes($marker, 1);
$t->wait_for(sub { !status()->{certificate_error} },
             what => 'a later 200 to clear certificate_error');
pass('status: a later 200 clears certificate_error');

###########################################################################
# coalescing: requests recorded before the helper looks are one push; a
# request within mdm_apns_coalesce of a push waits for the window's end
# and is one more push however many there are

my $co = enroll('00');
$t->psql(join '', map { "SELECT mdm_push_request(ARRAY['$co->{id}']);\n" }
                  1 .. 5);
is($t->psql("SELECT requests FROM mdm_push_requests "
            . "WHERE enrollment_id = '$co->{id}'"), 5,
   'five requests, one row');
$t->redis_cli('PUBLISH', 'mdm:push', '');
wait_pushes($co, 1);

# within the window: three more, each with its hint
request_push($co->{id}) for 1 .. 3;
wait_pushes($co, 2, timeout => 10);

$marker = enroll('00');
request_push($marker->{id});
wait_pushes($marker, 1);

my @co = $apns->pushes($co->{token});
is(scalar @co, 2, 'five requests, then three within the window: two pushes');
cmp_ok($co[1]{time} - $co[0]{time}, '>=', 1.8,
       'the second waited for the coalescing window (2s)');

###########################################################################
# many pushes share one HTTP/2 connection

my @many = enroll_many('01', 300);
my %many = map { $_->{token} => 1 } @many;
my $connects = status()->{counters}{connections};
request_push(map { $_->{id} } @many);
my @got;
$t->wait_for(sub {
    @got = grep { $many{ $_->{token} } } $apns->pushes;
    @got >= 300
}, timeout => 30, what => '300 pushes');
my $conns = $apns->connections(\%many);
is(scalar keys %$conns, 1, '300 pushes went over one TLS connection '
   . '($connection in the fake\'s access log)') or diag explain $conns;
is((values %$conns)[0], 300, 'all of them');
cmp_ok(status()->{counters}{connections} - $connects, '<=', 1,
       'the helper opened one connection at most for them');

###########################################################################
# requests written while the helper is dead are pushed after it respawns

my ($helper) = $t->pids_by_title(qr/mdm helper process/);
ok($helper, 'the helper runs');
kill 'STOP', $helper;
my @dead = enroll_many('00', 3);
request_push(map { $_->{id} } @dead);
kill 'KILL', $helper;
kill 'CONT', $helper;

$t->wait_for(sub {
    my ($h) = $t->pids_by_title(qr/mdm helper process/);
    $h && $h != $helper
}, what => 'a new helper');
wait_pushes($_, 1, timeout => 20) for @dead;
pass('pushed by the new helper');
is(scalar(() = $apns->pushes($dead[0]{token})), 1, 'once');

###########################################################################
# the counters

my $s = status();
ok($s->{enabled}, 'status: enabled');
is($s->{certificates}[0]{topic}, $topic, 'status: the topic');
cmp_ok($s->{counters}{sent}, '>=', 300, 'status: sent');
cmp_ok($s->{counters}{retried}, '>=', 4, 'status: retried');
cmp_ok($s->{counters}{failed}, '>=', 3, 'status: failed');
cmp_ok($s->{counters}{invalid_tokens}, '>=', 2, 'status: invalid_tokens');

is_deeply([ grep { !/helper process \d+ exited on signal 9|cache manager process \d+ exited on signal 9/ }
            $t->log_alerts(from => $run_mark) ], [],
          'no alerts in the error log but the kill');

done_testing;
