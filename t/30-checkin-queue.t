#!/usr/bin/perl
# The command queue: Idle, priority then age, results stored as sent,
# NotNow held for the rest of the exchange, re-sending of unanswered
# commands, expiry, reports for unknown commands, user channels' own
# queues, one statement per request, events in Redis.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use MDM::Test;
use MDM::Device;

my $t = MDM::Test->new(name => 'checkin-queue')->plan_skip_unless_module;

$t->start_postgres(settings => { log_statement => 'all' });
$t->start_redis;

my $ca = $t->make_ca(name => 'scep-ca');

$t->write_conf($t->checkin_conf(ca => $ca, http => <<"EOF"));
    mdm_checkin_events_maxlen 1000;
    # every report its own statement at once (the other files batch)
    mdm_checkin_batch 0;
    client_max_body_size 1m;
    client_body_buffer_size 16k;
EOF
$t->run;

$t->wait_for(sub {
    ($t->psql("SELECT count(*) FROM pg_proc "
              . "WHERE proname = 'mdm_command_report'"))[0] == 1
}, what => 'the helper to apply 005_checkin.sql');

my $n = 0;

# enqueue as the admin API does: mdm_commands, then mdm_queue 'Queued'
sub enqueue {
    my ($ids, $type, %o) = @_;
    my $uuid = $o{uuid} // sprintf 'CMD-%04d-%s', ++$n, $type;
    my $plist = $o{plist} // MDM::Device::plist_xml({
        CommandUUID => $uuid, Command => { RequestType => $type } });
    my $hex = unpack 'H*', $plist;
    my $expires = $o{expires} ? "now() + interval '$o{expires}'" : 'NULL';
    $t->psql("INSERT INTO mdm_commands (command_uuid, request_type, "
             . "command, expires_at) VALUES ('$uuid', '$type', "
             . "'\\x$hex', $expires)");
    for my $id (ref $ids ? @$ids : $ids) {
        $t->psql("INSERT INTO mdm_queue (enrollment_id, command_uuid, "
                 . "priority, queued_at) VALUES ('$id', '$uuid', "
                 . ($o{priority} // 0) . ", clock_timestamp())");
    }
    return wantarray ? ($uuid, $plist) : $uuid;
}

sub row {
    my ($id, $uuid, $cols) = @_;
    return scalar $t->psql("SELECT $cols FROM mdm_queue WHERE "
                           . "enrollment_id = '$id' AND command_uuid = "
                           . "'$uuid'");
}

my $dev = MDM::Device->new($t, ca => $ca, kind => 'iphone');
my $id = $dev->id;
is($dev->authenticate->{status}, 200, 'Authenticate');
is($dev->token_update->{status}, 200, 'TokenUpdate');

###########################################################################
# Idle on an empty queue

my $r = $dev->idle;
is($r->{status}, 200, 'Idle, empty queue: 200');
is($r->{body}, '', 'with an empty body');

###########################################################################
# priority, then age; the exact bytes as enqueued

my ($low1, $low1_plist) = enqueue($id, 'DeviceInformation');
my $low2 = enqueue($id, 'SecurityInfo');
my $high = enqueue($id, 'DeviceLock', priority => 10);

$r = $dev->idle;
is($r->{status}, 200, 'Idle with commands: 200');
is($r->{command}{CommandUUID}, $high, 'the higher priority first');
like($r->{headers}{'content-type'}, qr{^application/xml},
     'as application/xml');
# delivery counts are written behind, in batches (mdm_checkin_delivery_flush)
ok($t->wait_for(sub { row($id, $high, 'sent_count') == 1 },
                what => 'the delivery to be counted'), 'counted as sent');
ok(defined row($id, $high, 'sent_at'), 'with its time');

$r = $dev->report('Acknowledged', $high,
                  extra => { MessageResult => 'NoPasscodeSet' });
is($r->{command}{CommandUUID}, $low1, 'then the oldest');
is($r->{body}, $low1_plist, 'its bytes exactly as enqueued');
is(row($id, $high, 'status'), 'Acknowledged', 'the result is stored');
is(row($id, $high, "encode(sha256(result), 'hex')"),
   do { require Digest::SHA; Digest::SHA::sha256_hex(
        MDM::Device::plist_xml({ CommandUUID => $high,
                                 Status => 'Acknowledged', UDID => $id,
                                 MessageResult => 'NoPasscodeSet' })) },
   'the whole plist, byte for byte');

###########################################################################
# NotNow: kept, counted, skipped for the rest of the exchange, offered
# again at the next Idle

$r = $dev->report('NotNow', $low1);
is($r->{command}{CommandUUID}, $low2, 'after NotNow the next one');
is(row($id, $low1, 'status || not_now_tally'), 'NotNow1',
   'the NotNow command is kept and counted');

$r = $dev->report('Acknowledged', $low2);
is($r->{status}, 200, 'Acknowledged');
is($r->{body}, '', 'the NotNow one is not offered again in this exchange');

$r = $dev->idle;
is($r->{command}{CommandUUID}, $low1, 'the next Idle offers it again');

$r = $dev->report('NotNow', $low1);
is($r->{body}, '', 'NotNow again: nothing else to send');
is(row($id, $low1, 'not_now_tally'), 2, 'counted twice');

$r = $dev->idle;
is($r->{command}{CommandUUID}, $low1, 'offered at the next Idle');
$r = $dev->report('Error', $low1);
is($r->{status}, 200, 'Error report: 200');
is(row($id, $low1, 'status'), 'Error', 'the Error is stored');
like(row($id, $low1, "convert_from(result, 'UTF8')"),
     qr/MCMDMErrorDomain/, 'with its ErrorChain');

my $fmt = enqueue($id, 'Frobnicate');
is($dev->idle->{command}{CommandUUID}, $fmt, 'a command');
$dev->report('CommandFormatError', $fmt);
is(row($id, $fmt, 'status'), 'CommandFormatError', 'CommandFormatError');

###########################################################################
# sent but never answered: sent again

my $lost = enqueue($id, 'ProfileList');
is($dev->idle->{command}{CommandUUID}, $lost, 'sent once');
is($dev->idle->{command}{CommandUUID}, $lost, 'never answered: sent again');
ok($t->wait_for(sub { row($id, $lost, 'sent_count') == 2 },
                what => 'both deliveries to be counted'), 'sent twice');
$dev->report('Acknowledged', $lost);

###########################################################################
# expiry

my $expired = enqueue($id, 'InstallProfile', expires => '-1 minute',
                      priority => 5);
my $fresh = enqueue($id, 'InstallProfile', expires => '1 hour');
$r = $dev->idle;
is($r->{command}{CommandUUID}, $fresh, 'an expired command is not sent');
is(row($id, $expired, 'status'), 'Expired', 'it reports Expired');
is(row($id, $expired, 'sent_count'), 0, 'never sent');
$dev->report('Acknowledged', $fresh);

my @ev = split /\n/, $t->redis_cli('XRANGE', 'mdm:events', '-', '+');
ok(scalar(grep { $_ eq $expired } @ev), 'an "expired" event names it');

###########################################################################
# a report for a command that was never queued

my $mark = $t->log_mark;
my $next = enqueue($id, 'DeviceInformation');
$r = $dev->report('Acknowledged', 'NEVER-QUEUED');
is($r->{status}, 200, 'a report for a command never queued: 200');
is($r->{command}{CommandUUID}, $next, 'answered with the next command');
is($t->psql("SELECT count(*) FROM mdm_queue WHERE command_uuid = "
            . "'NEVER-QUEUED'"), 0, 'nothing stored');
like($t->error_log(from => $mark), qr/not in its queue: not stored/,
     'and logged');
$dev->report('Acknowledged', $next);

# another device's command
my $other = MDM::Device->new($t, ca => $ca, kind => 'iphone');
$other->authenticate;
$other->token_update;
my $theirs = enqueue($other->id, 'DeviceLock');
$r = $dev->report('Acknowledged', $theirs);
is($r->{status}, 200, "a report for another device's command: 200");
is(row($other->id, $theirs, 'status'), 'Queued', 'theirs is untouched');

###########################################################################
# user channels have their own queue

my $mac = MDM::Device->new($t, ca => $ca, kind => 'mac');
$mac->authenticate;
$mac->token_update;
my $user = $mac->user_channel;
$mac->token_update(user => $user);

my $for_user = enqueue($user->{id}, 'InstalledApplicationList');
my $for_device = enqueue($mac->id, 'DeviceInformation');
is($mac->idle(user => $user)->{command}{CommandUUID}, $for_user,
   'the user channel gets its command');
is($mac->report('Acknowledged', $for_user, user => $user)->{body}, '',
   "and not the device's");
is(row($user->{id}, $for_user, 'status'), 'Acknowledged', 'stored');
is($mac->idle->{command}{CommandUUID}, $for_device,
   'the device channel gets its own');
$mac->report('Acknowledged', $for_device);

# a user channel that never sent TokenUpdate is unknown
my $ghost = $mac->user_channel(short_name => 'ghost');
$r = $mac->idle(user => $ghost);
is($r->{status}, 500, 'Idle on a user channel never set up: 500');
like($r->{body}, qr/unknown enrollment/, 'unknown enrollment');

###########################################################################
# re-Authenticate cancels what was queued

my $stale = enqueue($id, 'EraseDevice');
$dev->authenticate;
is(row($id, $stale, 'status'), 'Cancelled', 'Authenticate cancels the queue');
$dev->token_update;
is($dev->idle->{body}, '', 'nothing to send afterwards');

###########################################################################
# binary plist reports; large reports (from the temp file nginx writes)

my $bin = enqueue($id, 'DeviceInformation');
is($dev->idle(binary => 1)->{command}{CommandUUID}, $bin,
   'a binary Idle');
$r = $dev->report('Acknowledged', $bin, binary => 1,
                  extra => { QueryResponses => { DeviceName => 'x' } });
is($r->{status}, 200, 'a binary report');
like(row($id, $bin, "encode(substr(result, 1, 8), 'escape')"), qr/^bplist/,
     'stored as sent');

my $big = enqueue($id, 'InstalledApplicationList');
$dev->idle;
my @apps = map { { Identifier => "com.example.app$_", Name => "App $_",
                   Version => '1.0', BundleSize => MDM::Device::integer(
                   1000 * $_) } } 1 .. 2000;
$r = $dev->report('Acknowledged', $big,
                  extra => { InstalledApplicationList => \@apps });
cmp_ok(length $r->{sent}, '>', 16 * 1024, 'a report larger than the '
       . 'body buffer (' . length($r->{sent}) . ' bytes)');
is($r->{status}, 200, 'is read from the temporary file');
is(row($id, $big, 'length(result)'), length $r->{sent}, 'stored whole');

###########################################################################
# bad reports

my $keep = enqueue($id, 'DeviceInformation');
$dev->idle;
for my $case (
    [ 'no Status', { UDID => $id, CommandUUID => $keep } ],
    [ 'an unknown Status', { UDID => $id, CommandUUID => $keep,
                             Status => 'Maybe' } ],
    [ 'Acknowledged without CommandUUID', { UDID => $id,
                                            Status => 'Acknowledged' } ],
    [ 'garbage', "\x00\xff" x 64 ],
) {
    my ($what, $msg) = @$case;
    my $m = $t->log_mark;
    $r = $dev->send($msg);
    is($r->{status}, 400, "$what: 400");
    is(scalar(grep { /mdm check-in/ } split /\n/, $t->error_log(from => $m)),
       1, "$what: one log line");
}
is(row($id, $keep, 'status'), 'Queued', 'nothing written by bad reports');

###########################################################################
# one statement per request, no write on an idle Idle

$dev->report('Acknowledged', $keep);
# (the batched delivery counts are not the request's)
my $before = $t->pg_log;
$r = $dev->idle;
is($r->{body}, '', 'an Idle with nothing queued');
my $log = substr $t->pg_log, length $before;
my @stmts = grep { !/mdm_queue_delivered/ }
            $log =~ /(?:statement|execute [^:]*): (.*)/g;
is(scalar @stmts, 1, 'one statement for the whole request')
    or diag explain \@stmts;
like($stmts[0] // '', qr/mdm_command_report/, 'mdm_command_report');
$before = $t->pg_log;
$dev->report('Acknowledged', $keep);    # a settled command again
$log = substr $t->pg_log, length $before;
@stmts = grep { !/mdm_queue_delivered/ }
         $log =~ /(?:statement|execute [^:]*): (.*)/g;
is(scalar @stmts, 1, 'a report: one statement too');

# events for every check-in and result
@ev = split /\n/, $t->redis_cli('XRANGE', 'mdm:events', '-', '+');
ok(scalar(grep { $_ eq 'report' } @ev), 'report events in mdm:events');
ok(scalar(grep { $_ eq 'NotNow' } @ev), 'NotNow among them');
ok(scalar(grep { $_ eq 'next_command_uuid' } @ev),
   'with the command sent next');
cmp_ok($t->redis_cli('XLEN', 'mdm:events'), '<=', 1100,
       'the stream is capped (MAXLEN ~)');

is_deeply([grep { !/signal 11/ } $t->log_alerts], [], 'no alerts');

done_testing;
