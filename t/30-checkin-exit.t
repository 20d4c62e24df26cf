#!/usr/bin/perl
# A worker that leaves gracefully (nginx -s reload, nginx -s quit) finishes
# what it started: a check-in waiting for PostgreSQL is answered and its
# result stored, and the delivery counts the worker holds in memory
# (mdm_checkin_delivery_flush) are written before it exits.  With
# worker_shutdown_timeout, a query still under way when it passes is cut
# short and the worker exits.  A Redis command awaiting its reply keeps a
# leaving worker too, and delivery counts whose rows stay locked are given
# up after a few seconds; so does the sync that an Idle answered from the
# cache waits for.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use MDM::Test;
use MDM::Device;
use MDM::Queue;

my $t = MDM::Test->new(name => 'checkin-exit')->plan_skip_unless_module;

$t->start_postgres;
$t->start_redis;

my $ca = $t->make_ca(name => 'scep-ca');

# a flush interval no test waits for: counts leave the worker only with an
# answer or at its exit
my $conf = $t->checkin_conf(ca => $ca, http => <<"EOF");
    mdm_postgres_timeout 60s;
    mdm_redis_timeout 60s;
    mdm_checkin_delivery_flush 60s;
EOF
$t->write_conf($conf, worker_processes => 1);
$t->run;

$t->wait_for(sub {
    ($t->psql("SELECT count(*) FROM pg_proc "
              . "WHERE proname = 'mdm_queue_delivered'"))[0] == 1
}, what => 'the helper to apply 005_checkin.sql');

my @devs = map { MDM::Device->new($t, ca => $ca, kind => 'iphone') } 1 .. 3;
for my $d (@devs) {
    $d->authenticate->{status} == 200 or BAIL_OUT('Authenticate failed');
    $d->token_update->{status} == 200 or BAIL_OUT('TokenUpdate failed');
}

my $q = MDM::Queue->new($t, prefix => 'EXIT');

sub row { $q->row(@_) }

# a report of $d for $uuid, stuck on the row lock until $release exists;
# its status goes to the file $status; returns the pids
sub stuck_report {
    my ($d, $uuid, $release, $status) = @_;
    my $holder = $q->hold_row($uuid, $release);
    my $reporter = $t->spawn(sub {
        my $r = $d->report('Acknowledged', $uuid);
        $t->write_file($status, $r->{status});
    }, log => "$status.log");
    $q->wait_lock_waiter;
    return ($holder, $reporter);
}

# a reload: returns the old worker and the error log's mark from before it
# once the new worker is up and the old one has been told to leave
sub reload_begin {
    my ($old) = $t->worker_pids;
    my $mark = $t->log_mark;
    kill 'HUP', $t->master_pid or die "kill HUP: $!\n";
    $t->wait_for(sub { grep { $_ != $old } $t->worker_pids },
                 what => 'the new worker');
    $t->wait_for_log(qr/gracefully shutting down/, undef, from => $mark);
    return ($old, $mark);
}

###########################################################################
# delivery counts held by a worker are written when it leaves (reload)

my @held = map { $q->enqueue($_->udid) } @devs[0, 1];
for my $i (0, 1) {
    is($devs[$i]->idle->{command}{CommandUUID}, $held[$i], "delivered $i");
}
is($devs[1]->idle->{command}{CommandUUID}, $held[1], 'delivered again');
is(row($devs[0]->udid, $held[0], 'sent_count'), 0,
   'the count is still in the worker');

$t->reload;

is(row($devs[0]->udid, $held[0], 'sent_count || (sent_at IS NOT NULL)::text'),
   '1true', 'written by the worker on its way out');
is(row($devs[1]->udid, $held[1], 'sent_count'), 2, 'both deliveries');

# the new worker counts from zero, and writes at quit as well
is($devs[1]->idle->{command}{CommandUUID}, $held[1], 'delivered by the new '
   . 'worker');

###########################################################################
# a check-in under way when the reload comes is answered and stored: the
# report waits for a row lock, the old worker waits for the report

my $d = $devs[2];
my $uuid = $q->enqueue($d->udid);
is($d->idle->{command}{CommandUUID}, $uuid, 'delivered');

my ($holder, $reporter) = stuck_report($d, $uuid, 'release',
                                       'report-status');

my ($old, $mark) = reload_begin();

ok(kill(0, $old), 'the old worker stays while a report is under way');
ok(!-e $t->path('report-status'), 'the report is still waiting');

$t->write_file('release', '');
waitpid $_, 0 for $holder, $reporter;

is($t->read_file($t->path('report-status')), 200,
   'the report is answered by the leaving worker');
is(row($d->udid, $uuid, 'status || sent_count'), 'Acknowledged1',
   'and stored, with its delivery count');
ok($t->wait_for(sub { !kill 0, $old }, what => 'the old worker to exit'),
   'then the old worker exits');

###########################################################################
# worker_shutdown_timeout bounds the wait: a report still stuck when it
# passes fails, and the old worker exits anyway

$t->write_conf($conf, worker_processes => 1,
               main => 'worker_shutdown_timeout 1s;');
$t->reload;

my $stuck = $q->enqueue($d->udid);
is($d->idle->{command}{CommandUUID}, $stuck, 'delivered');

my ($holder2, $reporter2) = stuck_report($d, $stuck, 'release2',
                                         'report2-status');

($old, $mark) = reload_begin();

ok($t->wait_for(sub { !kill 0, $old }, timeout => 15,
                what => 'the old worker to exit'),
   'the old worker exits after worker_shutdown_timeout, lock still held');
like($t->error_log(from => $mark), qr/shutdown timeout passed with a query/,
     'the query cut short is logged');
waitpid $reporter2, 0;
isnt($t->read_file($t->path('report2-status')), 200,
     'the stuck report was not answered 200');

$t->write_file('release2', '');
waitpid $holder2, 0;

###########################################################################
# a Redis command sent and not yet answered keeps the leaving worker: the
# check-in's event waits in Redis (CLIENT PAUSE WRITE) while the reload
# comes.  Redis drops the command of a client that goes away, so an
# event stored after UNPAUSE is one the old worker waited for.

$t->write_conf($conf, worker_processes => 1);
$t->reload;

my $events = $t->redis_cli('XLEN', 'mdm:events');
$t->redis_cli('CLIENT', 'PAUSE', 60000, 'WRITE');
my $paused = 1;
END { $t->redis_cli('CLIENT', 'UNPAUSE') if $paused && $t->redis_pid }

is($devs[0]->idle->{status}, 200, 'an Idle while Redis holds writes');
ok($t->wait_for(sub {
       $t->redis_cli('CLIENT', 'LIST') =~ /flags=\w*b\w* [^\n]*cmd=xadd/
   }, what => 'the event to wait in Redis'),
   'its event waits in Redis');

($old, $mark) = reload_begin();

ok(kill(0, $old), 'the old worker stays while Redis has not answered');

$t->redis_cli('CLIENT', 'UNPAUSE');
$paused = 0;

ok($t->wait_for(sub { !kill 0, $old }, what => 'the old worker to exit'),
   'then the old worker exits');
ok($t->wait_for(sub { $t->redis_cli('XLEN', 'mdm:events') > $events },
                what => 'the event'),
   'and the event it waited for is stored');
like($t->redis_cli('XREVRANGE', 'mdm:events', '+', '-', 'COUNT', 1),
     qr/^\Q@{[ $devs[0]->udid ]}\E$/m, 'it is the Idle\'s');

###########################################################################
# an Idle the cache answers waits for a sync (an empty query on the
# worker's LISTEN connection), and a sync under way keeps a leaving worker:
# the LISTEN backend is stopped (SIGSTOP) while the sync is on its way

my $e = MDM::Device->new($t, ca => $ca, kind => 'iphone');
$e->authenticate->{status} == 200 or BAIL_OUT('Authenticate failed');
$e->token_update->{status} == 200 or BAIL_OUT('TokenUpdate failed');
my $first = $e->idle;
ok($first->{status} == 200 && !$first->{command}, 'an empty queue, cached');

my $listener;
$t->wait_for(sub {
    my @pids = $t->psql("SELECT pid || ' ' || client_port "
                        . "FROM pg_stat_activity "
                        . "WHERE application_name = 'nginx-mdm listen'");
    $listener = $pids[0] if @pids == 1;
    @pids == 1;
}, what => 'one LISTEN connection');
my ($lpid, $lport) = split ' ', $listener;

kill 'STOP', $lpid or die "kill STOP $lpid: $!\n";
my $stopped = 1;
END { kill 'CONT', $lpid if $stopped }

# bytes the stopped backend has not read (PostgreSQL listens on 127.0.0.1
# here): the sync has been sent
sub unread {
    my ($local, $remote) = map { sprintf '0100007F:%04X', $_ } @_;
    open my $fh, '<', '/proc/net/tcp' or die "/proc/net/tcp: $!\n";
    while (<$fh>) {
        my @f = split ' ';
        return hex((split /:/, $f[4])[1])
            if $f[1] eq $local && $f[2] eq $remote;
    }
    return 0;
}

my $idler = $t->spawn(sub {
    my $r = $e->idle;
    $t->write_file('idle-status',
                   $r->{status} . ($r->{command} ? ' command' : ''));
}, log => 'idle-status.log');
ok($t->wait_for(sub { unread($t->port('pg'), $lport) > 0 },
                what => 'the sync to be sent'),
   'the cached Idle waits for its sync');

($old, $mark) = reload_begin();

ok(kill(0, $old), 'the old worker stays while the sync is under way');
ok(!-e $t->path('idle-status'), 'the Idle is still waiting');

kill 'CONT', $lpid;
$stopped = 0;
waitpid $idler, 0;

is($t->read_file($t->path('idle-status')), '200',
   'the Idle is answered by the leaving worker, empty');
ok($t->wait_for(sub { !kill 0, $old }, what => 'the old worker to exit'),
   'then the old worker exits');

###########################################################################
# counts for rows that stay locked are tried for about 3 s at exit, then
# given up: the worker does not wait for the lock

my $sent = row($devs[0]->udid, $held[0], 'sent_count');
is($devs[0]->idle->{command}{CommandUUID}, $held[0], 'delivered again');
my $holder3 = $q->hold_row($held[0], 'release3');

($old, $mark) = reload_begin();

ok($t->wait_for(sub { !kill 0, $old }, timeout => 20,
                what => 'the old worker to exit'),
   'the old worker exits with the row still locked');
like($t->error_log(from => $mark),
     qr/1 delivery counts still locked as the worker leaves, lost/,
     'the lost count is logged');

$t->write_file('release3', '');
waitpid $holder3, 0;
is(row($devs[0]->udid, $held[0], 'sent_count'), $sent,
   'the count was not written');

###########################################################################
# quit: the counts of the last worker are written too

$t->stop;
is(row($devs[1]->udid, $held[1], 'sent_count'), 3,
   'written at quit');

is_deeply([$t->log_alerts], [], 'no alerts');

done_testing;
