#!/usr/bin/perl
# The device simulator (t/lib/MDM/Device.pm) walks whole enrollments:
# identity from the SCEP-like CA, Authenticate, TokenUpdate, commands,
# CheckOut, for a Mac with a user channel, an iPhone (and a Shared iPad
# user), and a User Enrollment with its user channel over Mdm-Signature.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use MDM::Test;
use MDM::Device;

my $t = MDM::Test->new(name => 'checkin-device')->plan_skip_unless_module;

$t->start_postgres;
$t->start_redis;

my $ca = $t->make_ca(name => 'scep-ca');

$t->write_conf($t->checkin_conf(ca => $ca, http => <<"EOF", server => <<"EOF2"));
    mdm_checkin_last_seen_interval 100ms;
    client_max_body_size 1m;
    client_body_buffer_size 64k;
EOF
        mdm_checkin_signature on;
        mdm_checkin_user_authenticate digest;

        # the enrollment profile's ServerURL and CheckInURL
        location = /mdm/apple/mdm { mdm_checkin; }
        location = /mdm/apple/checkin { mdm_checkin; }
EOF2
$t->run;

$t->wait_for(sub {
    ($t->psql("SELECT count(*) FROM pg_proc "
              . "WHERE proname = 'mdm_command_report'"))[0] == 1
}, what => 'the helper to apply 005_checkin.sql');

my $n = 0;

sub enqueue {
    my ($id, $type, %command) = @_;
    my $uuid = sprintf 'WALK-%03d', ++$n;
    my $hex = unpack 'H*', MDM::Device::plist_xml({
        CommandUUID => $uuid,
        Command => { RequestType => $type, %command } });
    $t->psql("INSERT INTO mdm_commands (command_uuid, request_type, "
             . "command) VALUES ('$uuid', '$type', '\\x$hex'); "
             . "INSERT INTO mdm_queue (enrollment_id, command_uuid, "
             . "queued_at) VALUES ('$id', '$uuid', clock_timestamp())");
    return $uuid;
}

sub statuses {
    my ($id) = @_;
    return join ',', $t->psql_rows("SELECT status FROM mdm_queue "
                                   . "WHERE enrollment_id = '$id' "
                                   . "ORDER BY command_uuid");
}

sub enrollment {
    my ($id, $cols) = @_;
    return scalar $t->psql("SELECT $cols FROM mdm_enrollments "
                           . "WHERE id = '$id'");
}

###########################################################################
# a Mac with a user channel, check-ins on the CheckInURL

{
    my $mac = MDM::Device->new($t, ca => $ca, kind => 'mac',
                               checkin_url => '/mdm/apple/checkin');
    my $id = $mac->id;

    is($mac->authenticate->{status}, 200, 'Mac: Authenticate');
    is($mac->token_update(awaiting => 1)->{status}, 200,
       'Mac: TokenUpdate, awaiting configuration');
    is(enrollment($id, 'awaiting_configuration'), 't',
       'AwaitingConfiguration stored');
    is($mac->set_bootstrap_token('BOOTSTRAP')->{status}, 200,
       'Mac: SetBootstrapToken');

    my $user = $mac->user_channel(short_name => 'ann');
    my $ua = $mac->user_authenticate($user);
    is_deeply($ua->{plist}, { DigestChallenge => '' },
              'Mac user: UserAuthenticate gets a DigestChallenge');
    is($mac->user_authenticate($user, digest_response => 'd')->{status},
       200, 'Mac user: second UserAuthenticate');
    is($mac->token_update(user => $user)->{status}, 200,
       'Mac user: TokenUpdate');
    is(enrollment($user->{id}, 'enrollment_type || device_id'),
       "User$id", 'a user channel of the Mac');

    my $info = enqueue($id, 'DeviceInformation',
                       Queries => [ 'DeviceName', 'OSVersion' ]);
    my $configured = enqueue($id, 'DeviceConfigured');
    my $profiles = enqueue($user->{id}, 'ProfileList');

    my $r = $mac->idle;
    is($r->{command}{Command}{RequestType}, 'DeviceInformation',
       'Mac: DeviceInformation first');
    is_deeply($r->{command}{Command}{Queries}, [ 'DeviceName', 'OSVersion' ],
              'with its queries');
    $r = $mac->report('Acknowledged', $info, extra => { QueryResponses => {
                          DeviceName => 'Test Mac', OSVersion => '14.4.1' },
                          RequestType => 'DeviceInformation' });
    is($r->{command}{Command}{RequestType}, 'DeviceConfigured',
       'then DeviceConfigured');
    $r = $mac->report('Acknowledged', $configured);
    is($r->{body}, '', 'then nothing');

    my @got = $mac->drain(user => $user);
    is_deeply([ map { $_->{CommandUUID} } @got ], [ $profiles ],
              'Mac user: its own queue');
    is(statuses($id) . ';' . statuses($user->{id}),
       'Acknowledged,Acknowledged;Acknowledged', 'all acknowledged');

    is($mac->get_bootstrap_token->{plist}{BootstrapToken}->bytes,
       'BOOTSTRAP', 'Mac: GetBootstrapToken');

    is($mac->check_out->{status}, 200, 'Mac: CheckOut');
    is(enrollment($id, 'enabled') . enrollment($user->{id}, 'enabled'),
       'ff', 'both channels disabled');
}

###########################################################################
# an iPhone, and a Shared iPad with a user

{
    my $phone = MDM::Device->new($t, ca => $ca, kind => 'iphone');
    my $id = $phone->id;

    is($phone->authenticate->{status}, 200, 'iPhone: Authenticate');
    is(enrollment($id, 'imei IS NOT NULL'), 't', 'its IMEI stored');
    is($phone->token_update(unlock_token => "\x01\x02")->{status}, 200,
       'iPhone: TokenUpdate with UnlockToken');

    my $lock = enqueue($id, 'DeviceLock', Message => 'Lost');
    my $apps = enqueue($id, 'InstalledApplicationList');

    # locked after boot: NotNow, the other command goes on
    my $r = $phone->idle;
    is($r->{command}{CommandUUID}, $lock, 'iPhone: DeviceLock');
    $r = $phone->report('NotNow', $lock);
    is($r->{command}{CommandUUID}, $apps, 'NotNow: the next command');
    $r = $phone->report('Acknowledged', $apps, extra => {
        InstalledApplicationList => [ { Identifier => 'com.example',
                                        Name => 'Example' } ] });
    is($r->{body}, '', 'the NotNow one waits for the next Idle');
    my @got = $phone->drain;
    is_deeply([ map { $_->{CommandUUID} } @got ], [ $lock ],
              'iPhone: offered again at the next Idle');
    is(statuses($id), 'Acknowledged,Acknowledged', 'both done');

    is($phone->check_out->{status}, 200, 'iPhone: CheckOut');

    my $ipad = MDM::Device->new($t, ca => $ca, kind => 'ipad');
    $ipad->authenticate;
    $ipad->token_update;
    my $student = $ipad->user_channel(shared_ipad => 1,
                                      short_name => 'student7@example.org');
    is($ipad->token_update(user => $student)->{status}, 200,
       'Shared iPad user: TokenUpdate');
    is($student->{id}, $ipad->id . ':student7@example.org',
       'its id is the device and the short name');
    is(enrollment($student->{id}, 'enrollment_type'), 'Shared iPad',
       'a Shared iPad enrollment');
    my $cfg = enqueue($student->{id}, 'UserConfigured');
    is_deeply([ map { $_->{CommandUUID} } $ipad->drain(user => $student) ],
              [ $cfg ], 'Shared iPad user: UserConfigured');
}

###########################################################################
# a User Enrollment (BYOD) with its user channel, Mdm-Signature only

{
    my $byod = MDM::Device->new($t, ca => $ca, kind => 'iphone',
                                user_enrollment => 1,
                                transport => 'signature');
    my $id = $byod->id;

    is($byod->authenticate->{status}, 200, 'User Enrollment: Authenticate');
    is(enrollment($id, 'enrollment_type || coalesce(udid, \'-\')'),
       'User Enrollment (Device)-', 'no UDID, the EnrollmentID is the id');
    is($byod->token_update->{status}, 200, 'User Enrollment: TokenUpdate');

    my $user = $byod->user_channel;
    is($byod->token_update(user => $user)->{status}, 200,
       'User Enrollment user: TokenUpdate');
    is(enrollment($user->{id}, 'enrollment_type'), 'User Enrollment',
       'the user channel "EnrollmentID:EnrollmentUserID"');

    my $c1 = enqueue($id, 'ManagedApplicationList');
    my $c2 = enqueue($user->{id}, 'ProfileList');
    is_deeply([ map { $_->{CommandUUID} } $byod->drain ], [ $c1 ],
              'User Enrollment: device channel command');
    is_deeply([ map { $_->{CommandUUID} } $byod->drain(user => $user) ],
              [ $c2 ], 'User Enrollment: user channel command');

    is($byod->check_out->{status}, 200, 'User Enrollment: CheckOut');
    is(enrollment($id, 'enabled'), 'f', 'disabled');

    # re-enrolled with a new identity: bound too, queue starts afresh
    my $again = MDM::Device->new($t, ca => $ca, kind => 'iphone',
                                 user_enrollment => 1,
                                 enrollment_id => $id,
                                 transport => 'signature');
    my $old = enqueue($id, 'DeviceInformation');
    is($again->authenticate->{status}, 200, 're-enrollment: Authenticate');
    is($again->token_update->{status}, 200, 're-enrollment: TokenUpdate');
    is(enrollment($id, 'enabled || \'/\' || token_update_tally'), 'true/2',
       'enabled again, the second TokenUpdate');
    is(statuses($id), 'Acknowledged,Cancelled',
       'what was queued before is cancelled');
}

# last_seen for every channel that spoke
$t->wait_for(sub {
    $t->psql("SELECT count(*) FROM mdm_enrollments "
             . "WHERE last_seen_at IS NULL") == 0
}, what => 'last_seen of every enrollment');
pass('last_seen of every enrollment, written behind through Redis');

is_deeply([grep { !/signal 11/ } $t->log_alerts], [], 'no alerts');

done_testing;
