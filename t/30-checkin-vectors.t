#!/usr/bin/perl
# Replays the real device captures of ../shared/vectors/checkin and
# ../shared/vectors/commands through the whole path, once over mutual TLS
# and once with Mdm-Signature alone: each capture's UDID is enrolled with a
# certificate of our test SCEP CA, check-ins are sent byte for byte, every
# report answers a command queued under the capture's CommandUUID and is
# stored byte for byte, and the server-made command plists reach the
# device unchanged.  The captures whose <data> the authors replaced by
# invalid base64 (MANIFEST.md) get 400 and change nothing.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use Digest::SHA qw(sha256_hex);
use MDM::Test;
use MDM::Device;

my $t = MDM::Test->new(name => 'checkin-vectors')->plan_skip_unless_module;

my $vectors = $t->vectors_dir;
plan skip_all => "no vectors in $vectors" unless -d "$vectors/checkin";

$t->start_postgres;
$t->start_redis;

my $ca = $t->make_ca(name => 'scep-ca');

$t->write_conf($t->checkin_conf(ca => $ca, http => <<"EOF", server => <<"EOF2"));
    client_max_body_size 1m;
    client_body_buffer_size 1m;
EOF
        location = /mdm/apple/mdm { mdm_checkin; }
        location = /mdm/signed {
            mdm_checkin;
            mdm_checkin_signature require;
        }
EOF2
$t->run;

$t->wait_for(sub {
    ($t->psql("SELECT count(*) FROM pg_proc "
              . "WHERE proname = 'mdm_command_report'"))[0] == 1
}, what => 'the helper to apply 005_checkin.sql');

# the captures with invalid base64 placeholders (MANIFEST.md)
my %invalid = map { $_ => 1 } qw(
    checkin/commandment_TokenUpdate_iOS-11.3.1.xml
    commands/commandment_CertificateList_iOS-11.3.1.xml
);

sub slurp { $t->read_file("$vectors/$_[0]") }

my %parsed;

sub key_of {
    my ($xml, $key) = @_;
    my $root = $parsed{$xml} //= MDM::Device::parse_plist($xml);
    my $v = ref $root eq 'HASH' ? $root->{$key} : undef;
    return ref $v ? undef : $v;
}

sub sqlq { my ($s) = @_; $s =~ s/'/''/g; "'$s'" }

my (@checkins, @reports, @commands, @other);

for my $f (sort glob "$vectors/checkin/* $vectors/commands/*") {
    next if $f =~ /\.txt$/;
    (my $name = $f) =~ s{^\Q$vectors\E/}{};
    my $xml = slurp($name);
    if (defined key_of($xml, 'MessageType')) {
        push @checkins, $name;
    } elsif ($xml =~ m{<key>Status</key>} && defined key_of($xml, 'UDID')) {
        push @reports, $name;
    } elsif ($xml =~ m{<key>Command</key>}) {
        push @commands, $name;
    } else {
        push @other, $name;
    }
}

# Authenticate first, then device-channel TokenUpdates, user channels,
# CheckOut last
my %order = (Authenticate => 0, TokenUpdate => 1, CheckOut => 3);
@checkins = sort {
    my ($x, $y) = map { slurp($_) } $a, $b;
    ($order{ key_of($x, 'MessageType') } + (defined key_of($x, 'UserID')))
    <=> ($order{ key_of($y, 'MessageType') } + (defined key_of($y, 'UserID')))
    || $a cmp $b
} @checkins;

cmp_ok(scalar @checkins, '>=', 10, scalar(@checkins) . ' check-in captures');
cmp_ok(scalar @reports, '>=', 25, scalar(@reports) . ' report captures');
cmp_ok(scalar @commands, '>=', 3, scalar(@commands) . ' command plists');

my %device;     # UDID -> MDM::Device, one certificate each

sub device {
    my ($udid, $topic, $transport) = @_;
    my $d = $device{$udid} //= MDM::Device->new($t, ca => $ca,
                                                kind => 'iphone',
                                                udid => $udid,
                                                topic => $topic);
    $d->{transport} = $transport;
    $d->{url} = $d->{checkin_url} = $transport eq 'mtls' ? '/mdm/apple/mdm'
                                                         : '/mdm/signed';
    return $d;
}

sub enrolled {
    my ($d, $pass) = @_;
    return if $d->{enrolled_in}{$pass}++;
    is($d->authenticate->{status}, 200, "$pass: enroll " . $d->udid);
    is($d->token_update->{status}, 200, "$pass: TokenUpdate " . $d->udid);
}

for my $pass ('mtls', 'signature') {

    # check-ins, byte for byte

    for my $name (@checkins) {
        my $xml = slurp($name);
        my $type = key_of($xml, 'MessageType');
        my $udid = key_of($xml, 'UDID');
        my $d = device($udid, key_of($xml, 'Topic'), $pass);

        enrolled($d, $pass) unless $type eq 'Authenticate';
        $d->{enrolled_in}{$pass} = 1;

        my $before = $t->psql("SELECT string_agg(id || updated_at, ',') "
                              . "FROM mdm_enrollments");
        my $r = $d->checkin($xml);

        if ($invalid{$name}) {
            is($r->{status}, 400, "$pass: $name (invalid base64): 400");
            is($t->psql("SELECT string_agg(id || updated_at, ',') "
                        . "FROM mdm_enrollments"), $before,
               "$pass: $name: nothing written");
            next;
        }

        is($r->{status}, 200, "$pass: $name: 200") or diag $r->{body};

        my $user = key_of($xml, 'UserID');
        my $id = $user ? "$udid:$user" : $udid;

        if ($type eq 'Authenticate') {
            is($t->psql("SELECT topic || '|' || coalesce(serial_number, '') "
                        . "FROM mdm_enrollments WHERE id = " . sqlq($id)),
               key_of($xml, 'Topic') . '|'
               . (key_of($xml, 'SerialNumber') // ''),
               "$pass: $name: device stored");
        } elsif ($type eq 'TokenUpdate') {
            is($t->psql("SELECT push_magic || '|' || enabled "
                        . "FROM mdm_enrollments WHERE id = " . sqlq($id)),
               key_of($xml, 'PushMagic') . '|true',
               "$pass: $name: PushMagic stored, enabled");
        } elsif ($type eq 'CheckOut') {
            is($t->psql("SELECT enabled FROM mdm_enrollments WHERE id = "
                        . sqlq($id)), 'f', "$pass: $name: disabled");
        }
    }

    # reports, each for a command queued under its CommandUUID

    for my $name (@reports) {
        my $xml = slurp($name);
        my $udid = key_of($xml, 'UDID');
        my $uuid = key_of($xml, 'CommandUUID');
        my $status = key_of($xml, 'Status');
        my $d = device($udid, undef, $pass);
        enrolled($d, $pass);

        $t->psql("INSERT INTO mdm_commands (command_uuid, request_type, "
                 . "command) VALUES (" . sqlq($uuid) . ", 'Replay', '\\x00') "
                 . "ON CONFLICT DO NOTHING; "
                 . "INSERT INTO mdm_queue (enrollment_id, command_uuid) "
                 . "VALUES (" . sqlq($udid) . ", " . sqlq($uuid) . ") "
                 . "ON CONFLICT (enrollment_id, command_uuid) DO UPDATE "
                 . "SET status = 'Queued', result = NULL, held = false");

        my $r = $d->send($xml);
        my $row = $t->psql("SELECT status || '|' || coalesce(encode("
                           . "sha256(result), 'hex'), '') FROM mdm_queue "
                           . "WHERE enrollment_id = " . sqlq($udid)
                           . " AND command_uuid = " . sqlq($uuid));

        if ($invalid{$name}) {
            is($r->{status}, 400, "$pass: $name (invalid base64): 400");
            is($row, 'Queued|', "$pass: $name: nothing stored");
            next;
        }

        is($r->{status}, 200, "$pass: $name: 200") or diag $r->{body};
        is($row, "$status|" . sha256_hex($xml),
           "$pass: $name: $status stored byte for byte");
    }

    # server-made commands reach the device unchanged

    my $d = device('VECTOR-COMMANDS-DEVICE', undef, $pass);
    enrolled($d, $pass);

    for my $name (@commands) {
        my $plist = slurp($name);
        my $uuid = key_of($plist, 'CommandUUID');
        my $hex = unpack 'H*', $plist;

        $t->psql("INSERT INTO mdm_commands (command_uuid, request_type, "
                 . "command) VALUES (" . sqlq($uuid) . ", 'Replay', "
                 . "'\\x$hex') ON CONFLICT DO NOTHING; "
                 . "INSERT INTO mdm_queue (enrollment_id, command_uuid) "
                 . "VALUES ('VECTOR-COMMANDS-DEVICE', " . sqlq($uuid) . ") "
                 . "ON CONFLICT (enrollment_id, command_uuid) DO UPDATE "
                 . "SET status = 'Queued', result = NULL, held = false");

        my $r = $d->idle;
        is($r->{body}, $plist, "$pass: $name delivered byte for byte");
        is($r->{command}{CommandUUID}, $uuid, "$pass: $name: parsed");
        is($d->report('Acknowledged', $uuid)->{status}, 200,
           "$pass: $name acknowledged");
    }

    # what is neither: no MessageType, no Status
    for my $name (@other) {
        my $r = $d->send(slurp($name));
        is($r->{status}, 400, "$pass: $name (not a report): 400");
    }
}

is_deeply([grep { !/signal 11/ } $t->log_alerts], [], 'no alerts');

done_testing;
