#!/usr/bin/perl
# Check-in steps in batches (mdm_checkin_batch): Authenticate, TokenUpdate
# and command reports that come while
# the worker's statements are all in flight go together in one statement,
# one row each: every device gets its own next command, every result is
# stored as sent, two reports of one device keep their order, and a
# report alone is still the single prepared statement.  Delivery counts
# are written behind, in batches, and never wait for a row lock.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use MDM::Test;
use MDM::Device;
use MDM::Queue;

my $t = MDM::Test->new(name => 'checkin-batch')->plan_skip_unless_module;

$t->start_postgres(settings => { log_statement => 'all' });
$t->start_redis;

my $ca = $t->make_ca(name => 'scep-ca');

my $conf = $t->checkin_conf(ca => $ca, http => <<"EOF", after => <<"EOF2");
    mdm_checkin_batch 1;
    mdm_postgres_timeout 60s;
    mdm_checkin_delivery_flush 50ms;
    client_max_body_size 1m;
EOF

    server {
        listen 127.0.0.1:%%PORT_1%%;
        location = /status { stub_status; }
    }
EOF2
$t->write_conf($conf);
$t->run;

$t->wait_for(sub {
    ($t->psql("SELECT count(*) FROM pg_proc "
              . "WHERE proname = 'mdm_queue_delivered'"))[0] == 1
}, what => 'the helper to apply 005_checkin.sql');

my $N = 8;
my @devs = map { MDM::Device->new($t, ca => $ca, kind => 'iphone') } 1 .. $N;
for my $d (@devs) {
    $d->authenticate->{status} == 200 or BAIL_OUT('Authenticate failed');
    $d->token_update->{status} == 200 or BAIL_OUT('TokenUpdate failed');
}

my $q = MDM::Queue->new($t, prefix => 'BATCH');

sub enqueue { $q->enqueue(@_) }
sub row     { $q->row(@_) }

# requests being served, from stub_status ("Writing" counts this one too)
sub writing {
    my $r = $t->http(GET => '/status', port => 1, https => 0);
    return $r->{body} =~ /Writing: (\d+)/ ? $1 : -1;
}

# a report of each device, all at once
sub request {
    my ($d, %m) = @_;
    return [ PUT => '/mdm/apple/mdm',
             body => MDM::Device::plist_xml({ UDID => $d->udid, %m }),
             headers => { 'Content-Type' => 'application/x-apple-aspen-mdm' },
             https => 1, host => 'localhost',
             cert => $d->cert, key => $d->key ];
}

# Hold every statement on mdm_queue until $n requests are being served:
# the first report takes the worker's one statement and waits for the
# lock, the others wait in the worker and go together when it returns.
sub held_while {
    my ($n, $code, $table) = @_;
    $table //= 'mdm_queue';
    my $locker = $q->hold("LOCK TABLE $table IN ACCESS EXCLUSIVE MODE;\n"
                          . "SELECT 1;", sub { writing() >= $n + 1 },
                          "$n requests in the worker", 'locker.log');

    $t->wait_for(sub {
        $t->psql("SELECT count(*) FROM pg_locks l JOIN pg_class c "
                 . "ON c.oid = l.relation WHERE c.relname = '$table' "
                 . "AND l.mode = 'AccessExclusiveLock' AND l.granted") == 1
    }, what => "the lock on $table");

    my $r = $code->();
    waitpid $locker, 0;
    is($?, 0, 'the locker saw every request in the worker')
        or diag $t->read_file($t->path('locker.log'));
    return $r;
}

sub hold_row { $q->hold_row(@_) }

sub batch_statements {
    my ($log, $fn) = @_;
    $fn //= 'mdm_command_report';
    return scalar grep { /unnest\(\$1::bytea\[\]/ && /\Q$fn\E/ }
                  $log =~ /(?:statement|execute [^:]*): (.*)/g;
}

###########################################################################
# enrollment: Authenticate and TokenUpdate of several devices at once

my @new = map { MDM::Device->new($t, ca => $ca, kind => 'iphone') } 1 .. 6;

my $before = $t->pg_log;
# one check-in of each new device, all at once; $plist names the message
sub checkins {
    my ($plist) = @_;
    return $t->http_batch([ map {
        my $d = $_;
        [ PUT => '/mdm/apple/mdm',
          body => MDM::Device::plist_xml($d->$plist),
          headers => { 'Content-Type'
                           => 'application/x-apple-aspen-mdm-checkin' },
          https => 1, host => 'localhost', cert => $d->cert, key => $d->key ]
    } @new ], parallel => scalar @new);
}

my $b = held_while(scalar @new, sub { checkins('authenticate_plist') },
                   'mdm_enrollments');
my $log = substr $t->pg_log, length $before;
is_deeply($b->{statuses}, { 200 => scalar @new },
          'Authenticate of every device: 200');
ok(batch_statements($log, 'mdm_checkin_authenticate') >= 1, 'as a batch');
for my $d (@new) {
    is(scalar $t->psql("SELECT serial_number || ',' || enabled FROM "
                       . "mdm_enrollments WHERE id = '" . $d->udid . "'"),
       $d->serial . ',false', 'its own enrollment, its own serial');
    is(scalar $t->psql("SELECT enrollment_id FROM mdm_cert_bindings "
                       . "WHERE sha256 = '\\x" . $d->sha256 . "'"),
       $d->udid, 'its own certificate bound');
}

$before = $t->pg_log;
$b = held_while(scalar @new, sub { checkins('token_update_plist') },
                'mdm_enrollments');
$log = substr $t->pg_log, length $before;
is_deeply($b->{statuses}, { 200 => scalar @new },
          'TokenUpdate of every device: 200');
ok(batch_statements($log, 'mdm_checkin_token_update') >= 1, 'as a batch');
for my $d (@new) {
    is(scalar $t->psql("SELECT encode(push_token, 'hex') || ',' || push_magic"
                       . " || ',' || enabled || ',' || token_update_tally "
                       . "FROM mdm_enrollments WHERE id = '" . $d->udid . "'"),
       unpack('H*', $d->token) . ',' . $d->push_magic . ',true,1',
       'its own token and PushMagic, enabled');
}

###########################################################################
# Idle from every device at once: each gets its own command

my %cmd = map { ($_->udid => enqueue($_->udid)) } @devs;

$before = $t->pg_log;
$b = held_while($N, sub {
    $t->http_batch([ map { request($_, Status => 'Idle') } @devs ],
                   parallel => $N);
});
$log = substr $t->pg_log, length $before;

is_deeply($b->{statuses}, { 200 => $N }, "$N Idles answered 200");
for my $i (0 .. $N - 1) {
    my $got = MDM::Device::parse_plist($b->{results}[$i]{body}, t => $t);
    is(ref $got eq 'HASH' ? $got->{CommandUUID} : undef,
       $cmd{ $devs[$i]->udid }, "device $i: its own command");
}
ok(batch_statements($log) >= 1, 'the waiting reports went as a batch');

###########################################################################
# Acknowledged from every device at once: each result stored as sent

my %next = map { ($_->udid => enqueue($_->udid)) } @devs[0 .. 3];

$before = $t->pg_log;
$b = held_while($N, sub {
    $t->http_batch([ map {
        request($_, Status => 'Acknowledged', CommandUUID => $cmd{ $_->udid },
                QueryResponses => { DeviceName => 'Device of ' . $_->udid })
    } @devs ], parallel => $N);
});
$log = substr $t->pg_log, length $before;

is_deeply($b->{statuses}, { 200 => $N }, "$N Acknowledged answered 200");
ok(batch_statements($log) >= 1, 'as a batch');
for my $i (0 .. $N - 1) {
    my $d = $devs[$i];
    my $sent = MDM::Device::plist_xml({
        UDID => $d->udid, Status => 'Acknowledged',
        CommandUUID => $cmd{ $d->udid },
        QueryResponses => { DeviceName => 'Device of ' . $d->udid } });
    is(row($d->udid, $cmd{ $d->udid }, 'status'), 'Acknowledged',
       "device $i: Acknowledged stored");
    is(row($d->udid, $cmd{ $d->udid }, "encode(sha256(result), 'hex')"),
       do { require Digest::SHA; Digest::SHA::sha256_hex($sent) },
       "device $i: its own plist, byte for byte");

    my $got = $b->{results}[$i]{body} eq '' ? undef
            : MDM::Device::parse_plist($b->{results}[$i]{body}, t => $t);
    is(ref $got eq 'HASH' ? $got->{CommandUUID} : undef,
       $next{ $d->udid }, "device $i: then its next command, if any");
}

###########################################################################
# two reports of one device in one wait: two statements, in order

my $one = $devs[0];
my $c1 = enqueue($one->udid);
my $c2 = enqueue($one->udid);
is($one->idle->{command}{CommandUUID}, $next{ $one->udid },
   'the command left over first');
$one->report('Acknowledged', $next{ $one->udid });

$before = $t->pg_log;
$b = held_while(3, sub {
    $t->http_batch([ request($devs[1], Status => 'Idle'),
                     request($one, Status => 'Acknowledged',
                             CommandUUID => $c1),
                     request($one, Status => 'Acknowledged',
                             CommandUUID => $c2) ], parallel => 3);
});
is_deeply($b->{statuses}, { 200 => 3 }, 'all answered 200');
is(row($one->udid, $c1, 'status') . ',' . row($one->udid, $c2, 'status'),
   'Acknowledged,Acknowledged', 'both results stored');

###########################################################################
# a report alone: the single statement

$before = $t->pg_log;
is($devs[2]->idle->{status}, 200, 'an Idle alone');
$log = substr $t->pg_log, length $before;
is(batch_statements($log), 0, 'no batch for a report alone');
like($log, qr/mdm_command_report\(\$1/, 'the single statement');

###########################################################################
# delivery counts: written behind; a locked row is skipped, then written

my $lk = enqueue($devs[5]->udid);
is($devs[5]->idle->{command}{CommandUUID}, $lk, 'delivered');
ok($t->wait_for(sub { row($devs[5]->udid, $lk, 'sent_count') == 1 },
                what => 'the delivery count'), 'counted once');

my $locker = hold_row($lk, 'release');

$before = $t->pg_log;
is($devs[5]->idle->{command}{CommandUUID}, $lk, 'delivered again');
# one flush at a time: a second one means the first did not wait
$t->wait_for(sub {
    my @f = (substr $t->pg_log, length $before) =~ /mdm_queue_delivered/g;
    @f >= 2
}, what => 'two flushes while the row is locked');
is(row($devs[5]->udid, $lk, 'sent_count'), 1,
   'the locked row is skipped, the flush does not wait for it');
$t->write_file('release', '');
waitpid $locker, 0;
ok($t->wait_for(sub { row($devs[5]->udid, $lk, 'sent_count') == 2 },
                what => 'the count after the lock'),
   'written by a later flush');

###########################################################################
# a slow statement does not hold the others back: a report stuck on a row
# lock, another device's Idle still answered (in a statement of its own
# after a short wait)

my ($sa, $sb) = @devs[4, 7];
my $stuck = enqueue($sa->udid);
my $free = enqueue($sb->udid);
is($sa->idle->{command}{CommandUUID}, $stuck, 'delivered');

my $holder = hold_row($stuck, 'release-stuck');

my $reporter = $t->spawn(sub {
    my $r = $sa->report('Acknowledged', $stuck);
    $t->write_file('stuck-status', $r->{status});
}, log => 'reporter.log');

$q->wait_lock_waiter;

my $other = $sb->idle;
is($other->{command}{CommandUUID}, $free,
   'another device is answered while a statement is stuck');
ok(!-e $t->path('stuck-status'), 'the stuck report is still waiting');

$t->write_file('release-stuck', '');
waitpid $_, 0 for $holder, $reporter;
is($t->read_file($t->path('stuck-status')), 200,
   'the stuck report answered once the lock is gone');
is(row($sa->udid, $stuck, 'status'), 'Acknowledged', 'and stored');
$sb->report('Acknowledged', $free);

###########################################################################
# the answer carries the count: no flush needed (none comes for a minute)

(my $slow = $conf) =~ s/(mdm_checkin_delivery_flush) 50ms;/$1 60s;/;
$t->write_conf($slow);
$t->reload;

my $dv = $devs[6];
my $ans = enqueue($dv->udid);
is($dv->idle->{command}{CommandUUID}, $ans, 'delivered');
is(row($dv->udid, $ans, 'sent_count'), 0, 'not counted yet');
$dv->report('Acknowledged', $ans);
is(row($dv->udid, $ans, 'status || sent_count'), 'Acknowledged1',
   'counted with the answer, in the same statement');
is(row($dv->udid, $ans, 'sent_at <= answered_at'), 't', 'sent_at set');

my $nn = enqueue($dv->udid);
is($dv->idle->{command}{CommandUUID}, $nn, 'delivered');
$dv->report('NotNow', $nn);
is(row($dv->udid, $nn, 'status || sent_count'), 'NotNow1',
   'NotNow carries its count');
is($dv->idle->{command}{CommandUUID}, $nn, 'offered again');
is($dv->idle->{command}{CommandUUID}, $nn, 'and again (never answered)');
$dv->report('Acknowledged', $nn);
is(row($dv->udid, $nn, 'sent_count'), 3,
   'both later deliveries with the answer');

is_deeply([$t->log_alerts], [], 'no alerts');

done_testing;
