#!/usr/bin/perl
# APNs push, the rest: the sweep, a claim whose helper died (the lease),
# one certificate per topic, a topic without a certificate, a reload that
# rotates a certificate, Redis down (the poll still pushes), and two nodes
# on one database that never push a request twice.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use JSON::PP ();
use Time::HiRes qw(time);
use MDM::Test;
use MDM::FakeAPNs;

my $t = MDM::Test->new(name => 'apns-sweep')->plan_skip_unless_module;

$t->start_postgres;
$t->start_redis;

my $apns = MDM::FakeAPNs->new($t);
my $uuid_a = 'AAAAAAAA-1111-4111-8111-111111111111';
my $push_a = $apns->push_cert(uuid => $uuid_a);
my $push_b = $apns->push_cert;

sub module_conf {
    my ($a, %o) = @_;
    my $sweep = $o{sweep} // '1s';
    my $batch = $o{batch} // 1000;
    return <<"EOF";
    mdm_postgres "%%PG%% sslmode=disable";
    mdm_redis %%REDIS%%;
    mdm_helper_path %%TESTDIR%%/helper;

    mdm_apns_certificate $a->{cert};
    mdm_apns_certificate_key $a->{key};
    mdm_apns_certificate $push_b->{cert};
    mdm_apns_certificate_key $push_b->{key};
    mdm_apns_endpoint ${\ $apns->url };
    mdm_apns_trusted_certificate ${\ $apns->tls_ca };
    mdm_apns_poll_interval 200ms;
    mdm_apns_sweep_interval $sweep;
    mdm_apns_coalesce 500ms;
    mdm_apns_batch_size $batch;

    server {
        listen 127.0.0.1:%%PORT_0%%;
        location = /apns { mdm_apns_status; }
    }
EOF
}

$t->write_conf($apns->server_block . module_conf($push_a));
my $run_mark = $t->log_mark;
$t->run;
$apns->start;

$t->wait_for_log(qr/mdm apns push started: 2 certificate/, 20);
$t->wait_for(sub {
    $t->psql("SELECT to_regproc('mdm_push_request') IS NOT NULL") eq 't'
}, what => 'the push schema');

my $n_enroll = 0;

sub enroll {
    my ($kind, %o) = @_;
    my $i = ++$n_enroll;
    my $id = "E$i";
    my $token = $kind . sprintf('%062x', $i);
    my $topic = $o{topic} // $push_a->{topic};
    my $seen = $o{seen} // 'now()';
    $t->psql(<<"EOF");
INSERT INTO mdm_enrollments (id, device_id, channel, enrollment_type,
    enabled, topic, push_token, push_magic, last_seen_at)
VALUES ('$id', '$id', 'device', 'Device', true, '$topic',
        decode('$token', 'hex'), 'magic-$i', $seen);
EOF
    return { id => $id, token => $token };
}

sub enqueue {
    my ($e, $status) = @_;
    my $uuid = "C-$e->{id}-$status";
    $t->psql(<<"EOF");
INSERT INTO mdm_commands (command_uuid, request_type, command)
VALUES ('$uuid', 'DeviceInformation', '\\x00');
INSERT INTO mdm_queue (enrollment_id, command_uuid, status)
VALUES ('$e->{id}', '$uuid', '$status');
EOF
}

sub request_push {
    my (@ids) = @_;
    my $list = join ',', map { "'$_'" } @ids;
    my $n = $t->psql("SELECT mdm_push_request(ARRAY[$list])");
    $t->redis_cli('PUBLISH', 'mdm:push', '');
    return $n;
}

sub wait_pushes {
    my ($e, $n, %o) = @_;
    $t->wait_for(sub { $apns->count($e->{token}) >= $n },
                 what => "$n push(es) to $e->{id}", %o,
                 diag => sub { $t->log_tail });
}

###########################################################################
# one certificate per topic: the enrollment's topic chooses it

my $ea = enroll('00');
my $eb = enroll('00', topic => $push_b->{topic});
request_push($ea->{id}, $eb->{id});
wait_pushes($ea, 1);
wait_pushes($eb, 1);

my ($pa) = $apns->pushes($ea->{token});
my ($pb) = $apns->pushes($eb->{token});
like($pa->{dn}, qr/UID=\Q$push_a->{topic}\E/, 'topic A: certificate A');
is($pa->{headers}{'apns-topic'}, $push_a->{topic}, 'topic A: apns-topic');
like($pb->{dn}, qr/UID=\Q$push_b->{topic}\E/, 'topic B: certificate B');
is($pb->{headers}{'apns-topic'}, $push_b->{topic}, 'topic B: apns-topic');

###########################################################################
# a topic without a certificate: an error line, the request dropped

my $mark = $t->log_mark;
my $eu = enroll('00', topic => 'com.apple.mgmt.External.unknown');
request_push($eu->{id});
$t->wait_for_log(qr/no push certificate for topic "com\.apple\.mgmt\.External\.unknown"/,
                 10, from => $mark);
$t->wait_for(sub {
    $t->psql("SELECT last_push_error FROM mdm_enrollments "
             . "WHERE id = '$eu->{id}'") eq 'NoCertificateForTopic'
}, what => 'the failure to be recorded');
is($t->psql("SELECT count(*) FROM mdm_push_requests "
            . "WHERE enrollment_id = '$eu->{id}'"), 0,
   'no certificate for the topic: logged, recorded, dropped');
is($apns->count($eu->{token}), 0, 'and nothing sent');

###########################################################################
# a request claimed by a helper that died is pushed when its lease ends

my $el = enroll('00');
$t->psql("INSERT INTO mdm_push_requests (enrollment_id, claimed_by, "
         . "attempts, not_before) VALUES ('$el->{id}', 'gone/1/dead', 1, "
         . "now() + interval '1.5 seconds')");
my $claimed_at = time;
wait_pushes($el, 1, timeout => 10);
my ($pl) = $apns->pushes($el->{token});
cmp_ok($pl->{time} - $claimed_at, '>=', 1.3,
       'a dead helper\'s claim is pushed once its lease has ended');

###########################################################################
# the sweep: channels with pending commands (Queued, NotNow) that have
# neither checked in nor been pushed for a sweep interval

my $silent = enroll('00', seen => "now() - interval '1 hour'");
my $notnow = enroll('00', seen => "now() - interval '1 hour'");
my $recent = enroll('00', seen => "now() + interval '1 hour'");
my $idle = enroll('00', seen => "now() - interval '1 hour'");
my $acked = enroll('00', seen => "now() - interval '1 hour'");
enqueue($silent, 'Queued');
enqueue($notnow, 'NotNow');
enqueue($recent, 'Queued');
enqueue($acked, 'Acknowledged');

wait_pushes($silent, 2, timeout => 15);
wait_pushes($notnow, 2, timeout => 15);
pass('the sweep pushes silent channels with Queued or NotNow commands, '
     . 'again after an interval');
my @sp = $apns->pushes($silent->{token});
cmp_ok($sp[1]{time} - $sp[0]{time}, '>=', 0.9,
       'not more often than the sweep interval');
is($apns->count($recent->{token}), 0, 'not one that checked in lately');
is($apns->count($idle->{token}), 0, 'not one without commands');
is($apns->count($acked->{token}), 0, 'not one whose commands are done');

###########################################################################
# Redis down: no hint, the poll still pushes; the hint comes back

$t->stop_redis;
my $er = enroll('00');
is($t->psql("SELECT mdm_push_request(ARRAY['$er->{id}'])"), 1,
   'a request without the hint');
wait_pushes($er, 1, timeout => 5);
pass('Redis down: the poll pushes it');

$mark = $t->log_mark;
$t->start_redis;
$t->wait_for_log(qr/mdm apns hint subscribed/, 15, from => $mark);
pass('the hint subscribes again when Redis is back');

###########################################################################
# the connection to APNs is lost (its nginx worker killed) while pushes
# are in flight: they are retried on a new connection, none is lost; a
# push requested after the loss (L401) needs a new connection in any case,
# even when all 400 had arrived before the kill

$t->psql("INSERT INTO mdm_enrollments (id, device_id, channel, "
         . "enrollment_type, enabled, topic, push_token, push_magic) "
         . "SELECT 'L' || i, 'L' || i, 'device', 'Device', true, "
         . "'$push_a->{topic}', decode('03' || lpad(to_hex(i), 62, '0'), "
         . "'hex'), 'magic' FROM generate_series(1, 401) i");
my $connects = JSON::PP->new->decode($t->http(GET => '/apns')->{body})
               ->{counters}{connections};
request_push(map { "L$_" } 1 .. 400);
$t->wait_for(sub { grep { $_->{token} =~ /^03/ } $apns->pushes },
             what => 'the first pushes');
my ($worker) = $t->worker_pids;
kill 'KILL', $worker;
request_push('L401');
$t->wait_for(sub {
    $t->psql("SELECT count(*) FROM mdm_push_requests "
             . "WHERE enrollment_id LIKE 'L%'") == 0
}, timeout => 30, what => 'every push after the connection loss',
   diag => sub { $t->log_tail });
my %lost;
$lost{ $_->{token} }++ for grep { $_->{token} =~ /^03/ } $apns->pushes;
is(scalar keys %lost, 401, 'connection lost: every push still arrived');
is($t->psql("SELECT count(*) FROM mdm_enrollments WHERE id LIKE 'L%' "
            . "AND last_push_id IS NOT NULL"), 401, 'and was recorded');
cmp_ok(JSON::PP->new->decode($t->http(GET => '/apns')->{body})
       ->{counters}{connections} - $connects, '>=', 1,
       'on a new connection');

###########################################################################
# reload rotates a certificate (same topic, new certificate)

my $serial_a = $pa->{serial};
my $push_a2 = $apns->push_cert(uuid => $uuid_a, name => 'push-a-renewed');
isnt($push_a2->{cert}, $push_a->{cert}, 'a renewed certificate');

my ($helper) = $t->pids_by_title(qr/mdm helper process/);
$mark = $t->log_mark;
$t->write_conf($apns->server_block . module_conf($push_a2));
$t->reload;
$t->wait_for(sub {
    my ($h) = $t->pids_by_title(qr/mdm helper process/);
    $h && $h != $helper
}, what => 'the new helper');
$t->wait_for_log(qr/mdm apns push started/, 10, from => $mark);

my $e2 = enroll('00');
request_push($e2->{id});
wait_pushes($e2, 1);
my ($p2) = $apns->pushes($e2->{token});
like($p2->{dn}, qr/UID=\Q$push_a->{topic}\E/, 'after reload: the same topic');
isnt($p2->{serial}, $serial_a, 'with the renewed certificate');

###########################################################################
# two nodes on one database: each request is pushed once

my $t2 = MDM::Test->new(name => 'apns-node2');
my $conf2 = module_conf($push_a2, sweep => '0', batch => 50);
my $pg = $t->pg_conninfo;
my $redis = 'unix:' . $t->redis_socket;
$conf2 =~ s/%%PG%%/$pg/;
$conf2 =~ s/%%REDIS%%/$redis/;
$t2->write_conf($conf2);
$t2->run;
$t2->wait_for_log(qr/mdm apns push started/, 20);
$t2->wait_for_log(qr/mdm apns hint subscribed/, 10);

$mark = $t->log_mark;
$t->write_conf($apns->server_block
               . module_conf($push_a2, sweep => '0', batch => 50));
$t->reload;
$t->wait_for_log(qr/mdm apns push started/, 10, from => $mark);

my @ids = map { "N$_" } 1 .. 1000;
$t->psql("INSERT INTO mdm_enrollments (id, device_id, channel, "
         . "enrollment_type, enabled, topic, push_token, push_magic) "
         . "SELECT 'N' || i, 'N' || i, 'device', 'Device', true, "
         . "'$push_a->{topic}', decode('02' || lpad(to_hex(i), 62, '0'), "
         . "'hex'), 'magic' FROM generate_series(1, 1000) i");

my $status1 = sub {
    JSON::PP->new->decode($t->http(GET => '/apns')->{body})->{counters}
};
my $status2 = sub {
    JSON::PP->new->decode($t2->http(GET => '/apns')->{body})->{counters}
};
my ($c1, $c2) = ($status1->()->{claimed}, $status2->()->{claimed});

# in ten requests, each with its hint: both helpers claim
for my $k (0 .. 9) {
    request_push(@ids[$k * 100 .. $k * 100 + 99]);
}

my %count;
$t->wait_for(sub {
    %count = ();
    $count{ $_->{token} }++ for grep { $_->{token} =~ /^02/ } $apns->pushes;
    keys %count >= 1000
}, timeout => 30, what => '1000 pushes from two nodes');

my $twice = grep { $_ > 1 } values %count;
is($twice, 0, '1000 requests, two helpers: none pushed twice');
my ($d1, $d2) = ($status1->()->{claimed} - $c1,
                 $status2->()->{claimed} - $c2);
ok($d1 > 0 && $d2 > 0, "both helpers pushed ($d1 + $d2)");
# (the helper of the configuration before the reload may have swept once
# more as it left: its requests are pushed by the new helpers too)
ok($t->wait_for(sub {
       $t->psql("SELECT count(*) FROM mdm_push_requests") == 0
   }, what => 'every push request done'), 'all done');

is_deeply([ grep { !/worker process \d+ exited on signal 9/ }
            $t->log_alerts(from => $run_mark) ], [],
          'no alerts but the killed worker');
is_deeply([ $t2->log_alerts ], [], 'no alerts on the second node');

done_testing;
