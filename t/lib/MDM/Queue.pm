package MDM::Queue;

# What the command-queue tests share: enqueueing a command straight into
# PostgreSQL, reading a queue row, and holding a queue row's lock from
# another session (to keep a device's report waiting in the worker).
#
#   my $q = MDM::Queue->new($t, prefix => 'EXIT');
#   my $uuid = $q->enqueue($device->udid);
#   $q->row($device->udid, $uuid, 'status || sent_count');
#   my $pid = $q->hold_row($uuid, 'release');   # lock held on return
#   $t->write_file('release', ''); waitpid $pid, 0;

use strict;
use warnings;

use MDM::Device;

sub new {
    my ($class, $t, %opts) = @_;
    return bless { t => $t, prefix => $opts{prefix} // 'Q', seq => 0 },
        $class;
}

# a DeviceInformation command for enrollment $id; returns its UUID
sub enqueue {
    my ($self, $id) = @_;
    my $t = $self->{t};
    my $uuid = sprintf '%s-%03d', $self->{prefix}, ++$self->{seq};
    my $hex = unpack 'H*', MDM::Device::plist_xml({
        CommandUUID => $uuid,
        Command => { RequestType => 'DeviceInformation' } });
    $t->psql("INSERT INTO mdm_commands (command_uuid, request_type, command)"
             . " VALUES ('$uuid', 'DeviceInformation', '\\x$hex');"
             . " INSERT INTO mdm_queue (enrollment_id, command_uuid,"
             . " queued_at) VALUES ('$id', '$uuid', clock_timestamp())");
    return $uuid;
}

# columns $cols of the queue row ($id, $uuid), as psql prints them
sub row {
    my ($self, $id, $uuid, $cols) = @_;
    return scalar $self->{t}->psql("SELECT $cols FROM mdm_queue WHERE "
                                   . "enrollment_id = '$id' AND "
                                   . "command_uuid = '$uuid'");
}

# Run $sql in a transaction of another session (psql), and commit it once
# $until returns true (waiting for $what); returns the pid at once.
sub hold {
    my ($self, $sql, $until, $what, $log) = @_;
    my $t = $self->{t};
    return $t->spawn(sub {
        open my $psql, '|-', 'psql', '-X', '-q', '-d', $t->pg_conninfo
            or die "psql: $!";
        select((select($psql), $| = 1)[0]);
        print $psql "BEGIN;\n$sql\n";
        $t->wait_for($until, timeout => 60, what => $what);
        print $psql "COMMIT;\n";
        close $psql;
    }, log => $log);
}

# Lock the queue row of command $uuid in a transaction of another session
# until the file $release exists; returns (the pid) once the lock is held.
sub hold_row {
    my ($self, $uuid, $release) = @_;
    my $t = $self->{t};
    my $pid = $self->hold("SELECT 1 FROM mdm_queue WHERE command_uuid = "
                          . "'$uuid' FOR UPDATE;",
                          sub { -e $t->path($release) }, 'the release',
                          "$release.log");

    $t->wait_for(sub {
        $t->psql("SELECT count(*) FROM pg_stat_activity WHERE state = "
                 . "'idle in transaction' AND query LIKE '%$uuid%FOR UPDATE%'")
            == 1
    }, what => 'the row lock');

    return $pid;
}

# Once a report is under way: wait until its statement waits for a lock.
sub wait_lock_waiter {
    my ($self) = @_;
    my $t = $self->{t};
    $t->wait_for(sub {
        $t->psql("SELECT count(*) FROM pg_stat_activity "
                 . "WHERE wait_event_type = 'Lock' AND query LIKE '%mdm_%'")
            >= 1
    }, what => 'the report waiting for the row lock');
}

1;
