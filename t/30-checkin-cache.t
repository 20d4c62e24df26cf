#!/usr/bin/perl
# The workers' Idle cache (ngx_mdm_checkin_cache.c): an Idle on an empty
# queue is answered without the database once the database said so, and
# the cache never serves a stale "empty": a command enqueued after a cached
# Idle is delivered at the next Idle, on any worker; a revocation, a
# binding removed and a lost LISTEN connection are honoured at once.
# Also: prepared statements (one "execute" per request), and
# "mdm_checkin_cache off".

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use MDM::Test;
use MDM::Device;

my $t = MDM::Test->new(name => 'checkin-cache')->plan_skip_unless_module;

$t->start_postgres(settings => { log_statement => 'all' });
$t->start_redis;

my $ca = $t->make_ca(name => 'scep-ca');

my $conf = $t->checkin_conf(ca => $ca, http => <<"EOF");
    mdm_checkin_cache on;
EOF

$t->write_conf($conf, worker_processes => 2);
$t->run;

# the notify triggers come with 005_checkin.sql; wait for the whole schema
# (TokenUpdate needs 007's columns)
my $files = () = glob($t->repo_dir . '/ngx_mdm_core/sql/[0-9]*.sql');
$t->wait_for(sub {
    $t->psql("SELECT count(*) FROM pg_trigger "
             . "WHERE tgname = 'mdm_queue_notify_insert'") == 1
    && $t->psql('SELECT max(version) FROM mdm_schema_migrations') == $files
}, what => 'the helper to apply the schema');

sub listeners {
    return $t->psql("SELECT count(*) FROM pg_stat_activity "
                    . "WHERE application_name = 'nginx-mdm listen'");
}

$t->wait_for(sub { listeners() == 2 }, what => 'both workers to LISTEN');
pass('each worker LISTENs on mdm_checkin');

my $dev = MDM::Device->new($t, ca => $ca, kind => 'iphone');
my $id = $dev->id;
is($dev->authenticate->{status}, 200, 'Authenticate');
is($dev->token_update->{status}, 200, 'TokenUpdate');

# statements the server ran for the requests of $code
sub statements {
    my ($code) = @_;
    my $before = length $t->pg_log;
    $code->();
    my $log = substr $t->pg_log, $before;
    return grep { /mdm_command_report/ }
           $log =~ /(?:statement|execute [^:]*): (.*)/g;
}

my $n = 0;

sub enqueue {
    my ($type) = @_;
    my $uuid = sprintf 'CACHE-%04d-%s', ++$n, $type;
    my $plist = MDM::Device::plist_xml({
        CommandUUID => $uuid, Command => { RequestType => $type } });
    my $hex = unpack 'H*', $plist;
    $t->psql("INSERT INTO mdm_commands (command_uuid, request_type, command)"
             . " VALUES ('$uuid', '$type', '\\x$hex');"
             . " INSERT INTO mdm_queue (enrollment_id, command_uuid)"
             . " VALUES ('$id', '$uuid')");
    return $uuid;
}

###########################################################################
# Idle on an empty queue: the database once per worker, then the cache

my @stmts = statements(sub {
    for (1 .. 8) {
        my $r = $dev->idle;
        is($r->{status}, 200, "Idle $_: 200");
        is($r->{body}, '', "Idle $_: nothing to do");
    }
});
cmp_ok(scalar @stmts, '<=', 2,
       '8 Idles, at most one database call per worker ('
       . scalar(@stmts) . ')');
like($t->pg_log, qr/LOG:\s+execute mdm_\d+: SELECT .*mdm_command_report/,
   'the statement is prepared and executed by name');

my @ev = split /\n/, $t->redis_cli('XRANGE', 'mdm:events', '-', '+');
is(scalar(grep { $_ eq 'Idle' } @ev), 8, 'every Idle is in mdm:events');
$t->wait_for(sub {
    $t->redis_cli('HEXISTS', 'mdm:last_seen', $id)
    || $t->psql("SELECT count(*) FROM mdm_enrollments WHERE id = '$id' "
                . "AND last_seen_at IS NOT NULL")
}, what => 'last_seen');
pass('last_seen is recorded');

###########################################################################
# never a stale "empty": enqueue right after cached Idles

for my $round (1 .. 10) {
    $dev->idle for 1 .. 3;                  # both workers cached "empty"
    my $uuid = enqueue('DeviceInformation');
    my $r = $dev->idle;
    is($r->{command}{CommandUUID}, $uuid,
       "round $round: the Idle right after the enqueue gets the command");
    $r = $dev->report('Acknowledged', $uuid);
    is($r->{body}, '', "round $round: acknowledged, nothing more");
}

# a command re-queued by an UPDATE (not an INSERT) is seen too
$dev->idle for 1 .. 3;
$t->psql("UPDATE mdm_queue SET status = 'Queued' "
         . "WHERE enrollment_id = '$id' AND command_uuid = 'CACHE-0001-"
         . "DeviceInformation'");
is($dev->idle->{command}{CommandUUID}, 'CACHE-0001-DeviceInformation',
   're-queued by UPDATE: delivered at the next Idle');
$dev->report('Acknowledged', 'CACHE-0001-DeviceInformation');

# a NotNow'd command comes back at the next Idle
my $later = enqueue('InstallProfile');
is($dev->idle->{command}{CommandUUID}, $later, 'a command');
is($dev->report('NotNow', $later)->{body}, '', 'NotNow');
is($dev->idle->{command}{CommandUUID}, $later,
   'offered again at the next Idle (not a cached "empty")');
$dev->report('Acknowledged', $later);

###########################################################################
# revocation and bindings: honoured at once

my $sha = $dev->sha256;
$t->psql("INSERT INTO mdm_certificates (serial, sha256, subject, not_before,"
         . " not_after, der, source) VALUES (424242, '\\x$sha', 'CN=$id',"
         . " now() - interval '1 day', now() + interval '1 year',"
         . " '\\x00', 'static')");
is($dev->idle->{status}, 200, 'Idle') for 1 .. 4;
$t->psql("UPDATE mdm_certificates SET revoked_at = now() "
         . "WHERE serial = 424242");
my $r = $dev->idle;
is($r->{status}, 400, 'the Idle right after the revocation: 400');
like($r->{body}, qr/revoked/, 'device certificate revoked');
is($dev->idle->{status}, 400, 'and the next one too');

# a second device: its binding removed
my $dev2 = MDM::Device->new($t, ca => $ca, kind => 'mac');
$dev2->authenticate;
$dev2->token_update;
is($dev2->idle->{status}, 200, 'Idle') for 1 .. 4;
$t->psql("DELETE FROM mdm_cert_bindings WHERE enrollment_id = '"
         . $dev2->id . "'");
$r = $dev2->idle;
is($r->{status}, 500, 'binding removed: the next Idle is refused (500)');
like($r->{body}, qr/bound to no enrollment/, 'unbound');

###########################################################################
# the LISTEN connection lost: nothing is served from the cache until it is
# back, and what was enqueued meanwhile is delivered

my $dev3 = MDM::Device->new($t, ca => $ca, kind => 'ipad');
$dev3->authenticate;
$dev3->token_update;
$id = $dev3->id;
$dev3->idle for 1 .. 4;

$t->psql("SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity "
         . "WHERE application_name = 'nginx-mdm listen'");
my $lost = enqueue('DeviceLock');
$r = $dev3->idle;
is($r->{command}{CommandUUID}, $lost,
   'LISTEN lost, a command enqueued: the next Idle gets it');
$dev3->report('Acknowledged', $lost);

$t->wait_for(sub { listeners() == 2 }, what => 'the workers to LISTEN again');
pass('LISTEN is back');
$dev3->idle for 1 .. 4;
my $back = enqueue('DeviceLock');
is($dev3->idle->{command}{CommandUUID}, $back,
   'after the reconnection too');
$dev3->report('Acknowledged', $back);

###########################################################################
# mdm_checkin_cache off: every Idle asks the database

(my $off = $conf) =~ s/mdm_checkin_cache on;/mdm_checkin_cache off;/;
$t->write_conf($off, worker_processes => 2);
$t->reload;

@stmts = statements(sub { $dev3->idle for 1 .. 4 });
is(scalar @stmts, 4, 'cache off: one database call per Idle');

is_deeply([$t->log_alerts], [], 'no alerts');

done_testing;
