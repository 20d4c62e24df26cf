#!/usr/bin/perl
# The core: load, nginx -t, the status location, queries that never block
# the worker, PostgreSQL and Redis going away and coming back, the helper
# process through kill, reload and quit.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use POSIX ();
use Time::HiRes qw(time);
use MDM::Test;

my $t = MDM::Test->new(name => 'core')->plan_skip_unless_module;

$t->start_postgres;
$t->start_redis;

my $conf = <<'EOF';
    mdm_postgres "%%PG%% sslmode=disable";
    mdm_postgres_pool_size 20;
    mdm_postgres_connect_timeout 1s;
    mdm_redis %%REDIS%%;
    mdm_retry_after 7;
    mdm_helper_path %%TESTDIR%%/helper;

    server {
        listen 127.0.0.1:%%PORT_0%%;
        location = /status { mdm_status; }
        location = /sleep  { mdm_debug_query "SELECT pg_sleep(0.3)"; }
        location = /one    { mdm_debug_query "SELECT 1"; }
        location = /plain  { return 200 "plain\n"; }
    }
EOF

# nginx -t: a bad directive fails with a message that names it

$t->write_conf($conf =~ s/pool_size 20/pool_size 0/r);
my ($st, $out) = $t->nginx_test;
isnt($st, 0, 'nginx -t fails on a pool size of 0');
like($out, qr/mdm_postgres_pool_size/, 'the message names the directive');

$t->write_conf($conf =~ s/mdm_redis %%REDIS%%;/mdm_redis "no such host:x";/r);
($st, $out) = $t->nginx_test;
isnt($st, 0, 'nginx -t fails on a bad redis address');
like($out, qr/mdm_redis/, 'the message names mdm_redis');

$t->write_conf($conf =~ s/mdm_postgres "/mdm_postgres "nonsense /r);
($st, $out) = $t->nginx_test;
isnt($st, 0, 'nginx -t fails on a bad connection string');
like($out, qr/mdm_postgres/, 'the message names mdm_postgres');

$t->write_conf($conf);
unlink $t->path('error.log');
($st, $out) = $t->nginx_test;
is($st, 0, 'nginx -t accepts the configuration') or diag $out;

$t->run;

# status: real round trips, schema applied by the helper

my $files = () = glob($t->repo_dir . '/ngx_mdm_core/sql/[0-9]*.sql');
my $status;
$t->wait_for(sub {
    my $r = $t->http(GET => '/status');
    $status = $r->{body};
    $r->{status} == 200 && $status =~ /"schema_version": $files\b/;
}, what => 'the helper to apply the schema');

like($status, qr/"postgres": \{"ok": true, "latency_ms": [0-9.]+/,
     'status: postgres reachable, with latency');
like($status, qr/"redis": \{"ok": true, "latency_ms": [0-9.]+/,
     'status: redis reachable, with latency');
like($status, qr/"helper": \{"heartbeat_age_s": [0-9]\b/,
     'status: helper heartbeat is recent');

pass("every migration applied ($files)");
is($t->psql('SELECT count(*) FROM mdm_schema_migrations'), $files,
   'each recorded once in the version table');

# non-blocking: with one worker, twenty 0.3 s queries at once take about
# the time of one, and a plain request in between is answered at once

my $n = 20;
my $pid = $t->spawn(sub {
    my $res = $t->http_parallel($n, GET => '/sleep');
    my $ok = $res->{statuses}{200} // 0;
    open my $fh, '>', $t->path('parallel.out') or die;
    printf $fh "%d %.3f\n", $ok, $res->{wall};
    close $fh;
});

$t->wait_for(sub {
    $t->psql("SELECT count(*) FROM pg_stat_activity "
             . "WHERE query LIKE 'SELECT pg_sleep%'") >= $n / 2
}, what => 'the slow queries to be running');

my $plain = $t->http(GET => '/plain');
is($plain->{status}, 200, 'a plain request while queries wait');
cmp_ok($plain->{time}, '<', 0.25, 'answered at once');

$t->wait_for(sub { -s $t->path('parallel.out') },
             what => 'the parallel requests');
my ($ok, $wall) = split ' ', $t->read_file('parallel.out');
is($ok, $n, "all $n slow requests answered 200");
cmp_ok($wall, '<', 0.3 * $n / 4, "in about the time of one ($wall s)");
waitpid($pid, 0);

# PostgreSQL goes away: 503 with Retry-After at once, other requests go on

$t->stop_postgres;

my $r = $t->http(GET => '/one');
is($r->{status}, 503, 'database down: 503');
is($r->{headers}{'retry-after'}, '7', 'with Retry-After');
cmp_ok($r->{time}, '<', 1, 'within a bounded time');
is($t->http(GET => '/plain')->{status}, 200, 'other requests go on');

$r = $t->http(GET => '/status');
is($r->{status}, 503, 'status answers 503 without the database');
like($r->{body}, qr/"postgres": \{"ok": false/, 'and says why');

$t->start_postgres;

$t->wait_for(sub { $t->http(GET => '/one')->{status} == 200 },
             what => 'queries to work again after PostgreSQL restarted');
is($t->http(GET => '/status')->{status}, 200, 'status is 200 again');

# Redis goes away and comes back

$t->stop_redis;
$t->wait_for(sub {
    $t->http(GET => '/status')->{body} =~ /"redis": \{"ok": false/
}, what => 'status to report redis down');
is($t->http(GET => '/status')->{status}, 200,
   'redis down alone does not fail the status');

$t->start_redis;
$t->wait_for(sub {
    $t->http(GET => '/status')->{body} =~ /"redis": \{"ok": true/
}, what => 'redis to be reachable again');
pass('redis reconnects by itself');

# the helper process: named, respawned when killed, one after reload

my @helpers = $t->pids_by_title(qr/mdm helper process/);
is(scalar @helpers, 1, 'one helper process, named "mdm helper process"');

kill 'KILL', $helpers[0];
my @again;
$t->wait_for(sub {
    @again = grep { $_ != $helpers[0] }
             $t->pids_by_title(qr/mdm helper process/);
    @again == 1;
}, what => 'the helper to be respawned');
isnt($again[0], $helpers[0], 'killed, it comes back');

$t->reload;
$t->wait_for(sub {
    my @h = $t->pids_by_title(qr/mdm helper process/);
    @h == 1 && $h[0] != $again[0];
}, what => 'exactly one new helper after reload');
pass('after reload there is exactly one helper');

$t->wait_for(sub {
    $t->http(GET => '/status')->{body} =~ /"heartbeat_age_s": [0-2]\b/
}, what => 'the new helper to beat');
pass('the new helper heartbeats');

is_deeply([grep { !/exited on signal 9/ } $t->log_alerts], [],
          'no alerts in the error log but the kill');

# quit: every process leaves

my $master = $t->master_pid;
my @all = ($master, $t->worker_pids, $t->pids_by_title(qr/mdm helper/));
$t->stop;
sub alive {
    my ($pid) = @_;
    open my $fh, '<', "/proc/$pid/stat" or return 0;
    return (split ' ', scalar <$fh>)[2] ne 'Z';
}
is(scalar(grep { alive($_) } @all), 0,
   'master, workers and helper are gone after quit');

done_testing;
