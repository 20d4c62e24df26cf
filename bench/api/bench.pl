#!/usr/bin/perl
# Admin API enqueue speed: one command to N enrollments in one call,
# measured end to end (the API call, from the first byte sent to the last
# byte of the answer, which comes only after the statement committed), and
# checked: every queue row is in PostgreSQL when the answer arrives.
#
#   perl bench/api/bench.pl [N ...]        (default 10000 100000)
#   MDM_BENCH_RUNS=5 perl bench/api/bench.pl 100000
#   MDM_BENCH_NICE=-10 perl bench/api/bench.pl  (root: nginx and PostgreSQL
#       before anything else on a shared machine, as on a dedicated one)
#
# Self-contained: PostgreSQL (initdb's defaults: durable, 16 MB WAL
# segments), Redis and nginx (one worker, auth_basic in front of the API as
# `make run` has it) are started with the test harness (t/lib/MDM/Test.pm)
# in a temporary directory and removed after.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/../../t/lib";

use JSON::PP ();
use MIME::Base64 qw(encode_base64);
use Time::HiRes qw(time);
use MDM::Test;

my @sizes = @ARGV ? @ARGV : (10_000, 100_000);
my $runs = $ENV{MDM_BENCH_RUNS} // 3;
my ($max) = sort { $b <=> $a } @sizes;

my $t = MDM::Test->new(name => 'bench-api');
die "build the module first (make module)\n" unless $t->has_module;

start_durable_postgres();
$t->start_redis;

# A cluster as production has it: the harness's own is made for speed
# (fsync off, and 1 MB WAL segments, each of which the writing backend
# fsyncs when it fills one: 30 fsyncs for the WAL of 100,000 queue rows).
# This one has initdb's defaults (16 MB segments) and fsync,
# synchronous_commit and full_page_writes on; the harness knows it as its
# own (psql, pg_pid, cleanup).
sub start_durable_postgres {
    my $dir = $t->path('pg');
    my $data = "$dir/data";
    my @as = $> == 0 ? ('runuser', '-u', 'postgres', '--') : ();
    my ($bin) = sort { $b cmp $a } glob '/usr/lib/postgresql/*/bin';

    mkdir $_ or die "mkdir $_: $!\n" for $dir, "$dir/sock";
    chown +(getpwnam 'postgres')[2, 3], $dir, "$dir/sock" if $> == 0;

    my $r = $t->run_command([ @as, "$bin/initdb", '-A', 'trust',
                              '-U', 'postgres', '-E', 'UTF8',
                              '--locale=C', '--no-instructions',
                              '-D', $data ], cwd => '/');
    die "initdb: $r->{stdout}$r->{stderr}" if $r->{status};

    open my $fh, '>>', "$data/postgresql.conf" or die "$!\n";
    printf $fh "%s = '%s'\n", @$_ for
        [ listen_addresses => '127.0.0.1' ], [ port => $t->port('pg') ],
        [ unix_socket_directories => "$dir/sock" ],
        [ shared_buffers => '256MB' ], [ timezone => 'UTC' ],
        [ log_min_duration_statement => '100ms' ];
    close $fh;

    $r = $t->run_command([ @as, "$bin/pg_ctl", 'start', '-w', '-s',
                           '-D', $data, '-l', "$dir/postgres.log" ],
                         cwd => '/');
    die "pg_ctl: $r->{stdout}$r->{stderr}" if $r->{status};

    $t->{pg} = { dir => $dir, data => $data, log => "$dir/postgres.log",
                 db => 'mdm_test', user => 'postgres', settings => {},
                 created => 1 };
    $t->psql('CREATE DATABASE mdm_test', dbname => 'postgres');
}

my $secret = 'bench';
my $hash = $t->run_command([ 'openssl', 'passwd', '-apr1', $secret ]);
$t->write_file('htpasswd', "admin:$hash->{stdout}");
my $auth = 'Basic ' . encode_base64("admin:$secret", '');

$t->write_conf(<<'EOF');
    mdm_postgres "%%PG%% sslmode=disable";
    mdm_postgres_timeout 60s;
    mdm_redis %%REDIS%%;
    mdm_helper_path %%TESTDIR%%/helper;

    server {
        listen 127.0.0.1:%%PORT_0%%;
        client_max_body_size 64m;
        client_body_buffer_size 8m;

        location /api/v1/mdm/ {
            auth_basic "nginx-mdm admin";
            auth_basic_user_file %%TESTDIR%%/htpasswd;
            mdm_api;
            mdm_api_auth $remote_user;
        }

        location = /status { mdm_status; }
    }
EOF
$t->run;

my ($top) = sort { $b <=> $a } map { m{/0*(\d+)_[^/]*\.sql$} ? $1 : () }
            glob($t->repo_dir . '/ngx_mdm_core/sql/[0-9]*.sql');
$t->wait_for(sub {
    $t->http(GET => '/status')->{body} =~ /"schema_version": $top\b/
}, timeout => 60, what => 'the schema');

# the enrollments: device channels with push tokens, as after TokenUpdate
$t->psql(<<"SQL");
INSERT INTO mdm_enrollments (id, device_id, channel, enrollment_type, udid,
    serial_number, topic, push_token, push_magic, enabled)
SELECT u, u, 'device', 'Device', u, 'SER' || g, 'com.apple.mgmt.bench',
       decode(md5(u) || md5(u), 'hex'), 'magic-' || g, true
FROM generate_series(1, $max) AS g,
     LATERAL (SELECT upper(md5('udid' || g)::uuid::text) AS u) AS x;
VACUUM ANALYZE mdm_enrollments;
CHECKPOINT;
SQL

my @ids = $t->psql_rows("SELECT id FROM mdm_enrollments ORDER BY random()");

# CPU seconds (user + system) of a process, and of the whole cluster: the
# machine may be shared, so the wall time alone says little
sub cpu {
    my ($pid) = @_;
    my $stat = $t->read_file("/proc/$pid/stat") // return 0;
    my @f = split ' ', ($stat =~ /\) (.*)/s)[0];
    return ($f[11] + $f[12]) / 100;
}

sub pg_cpu {
    my $master = $t->pg_pid;
    my $sum = cpu($master);
    opendir my $dh, '/proc' or die;
    for my $pid (grep { /^\d+$/ } readdir $dh) {
        my $stat = $t->read_file("/proc/$pid/stat") // next;
        my ($ppid) = $stat =~ /\) \S (\d+)/ or next;
        $sum += cpu($pid) if $ppid == $master;
    }
    return $sum;
}

my ($worker) = $t->worker_pids;

my $nice = $ENV{MDM_BENCH_NICE};
if (defined $nice) {
    my @pids = ($t->master_pid, $t->worker_pids, $t->pg_pid);
    opendir my $dh, '/proc' or die;
    for my $pid (grep { /^\d+$/ } readdir $dh) {
        my $stat = $t->read_file("/proc/$pid/stat") // next;
        my ($ppid) = $stat =~ /\) \S (\d+)/ or next;
        push @pids, $pid if $ppid == $t->pg_pid;
    }
    my $r = $t->run_command([ 'renice', '-n', $nice, '-p', @pids ]);
    die "renice: $r->{stderr}" if $r->{status};
}
my $json = JSON::PP->new;

my @rows;
for my $push (0, 1) {
    for my $n (@sizes) {
        my @times;
        for my $run (1 .. $runs) {
            my $body = $json->encode({
                enrollment_ids => [ @ids[0 .. $n - 1] ],
                push => $push ? JSON::PP::true : JSON::PP::false,
                command => { RequestType => 'DeviceInformation',
                             Queries => [ 'UDID', 'OSVersion',
                                          'SerialNumber' ] },
            });
            my $file = $t->write_file("body-$n.json", $body);

            my ($ngx0, $pg0) = (cpu($worker), pg_cpu());
            my $r = $t->http(POST => '/api/v1/mdm/commands',
                             headers => { Authorization => $auth,
                                          'Content-Type' =>
                                              'application/json' },
                             body_file => $file, timeout => 120);
            die "enqueue failed: $r->{status} "
                . substr($r->{body}, 0, 300) . "\n"
                unless $r->{status} == 200;
            my ($ngx1, $pg1) = (cpu($worker), pg_cpu());
            my $uuid = $json->decode($r->{body})->{command_uuid};
            my ($db) = $t->pg_log =~ /.*duration: ([\d.]+) ms\s+(?:statement|execute [^:]*): WITH ids/s;

            # committed before the answer: count at once, no waiting
            my $rows = $t->psql("SELECT count(*) FROM mdm_queue "
                                . "WHERE command_uuid = '$uuid'");
            die "only $rows of $n queue rows committed\n" if $rows != $n;

            push @times, [ $r->{time}, $ngx1 - $ngx0, $pg1 - $pg0 ];
            printf STDERR "push=%d n=%d run=%d: %.3f s (statement %.3f s), "
                          . "CPU nginx %.2f s, PostgreSQL %.2f s (%d bytes "
                          . "sent, %d received)\n", $push, $n, $run,
                          $r->{time}, ($db // 0) / 1000, $ngx1 - $ngx0,
                          $pg1 - $pg0, length $body, length $r->{body};

            # the next run starts from the same state
            $t->psql("DELETE FROM mdm_queue WHERE command_uuid = '$uuid'; "
                     . "DELETE FROM mdm_commands WHERE command_uuid = "
                     . "'$uuid'; DELETE FROM mdm_push_requests; "
                     . "VACUUM ANALYZE mdm_queue");
        }
        my @sorted = sort { $a->[0] <=> $b->[0] } @times;
        my $median = $sorted[$#sorted / 2];
        push @rows, [ $n, $push ? 'true' : 'false', $sorted[0][0],
                      $median->[0], $sorted[-1][0], $median->[1],
                      $median->[2] ];
    }
}

my $cpu = (grep { /^model name/ } split /\n/, $t->read_file('/proc/cpuinfo')
           // '')[0] // '';
$cpu =~ s/^model name\s*:\s*//;
my $cores = () = ($t->read_file('/proc/cpuinfo') // '') =~ /^processor/mg;
my $load = (split ' ', $t->read_file('/proc/loadavg') // '')[0];

print "\nOne POST /commands, $runs runs each, seconds from the request's "
    . "first byte to the answer's last (rows committed).\n";
print "Machine: $cpu, $cores cores, load average $load at the end"
    . (defined $nice ? ", nginx and PostgreSQL at nice $nice" : '')
    . ".\n\n";
print "| enrollments | push | best s | median s | worst s "
    . "| CPU nginx s | CPU PostgreSQL s |\n";
print "|---:|:---:|---:|---:|---:|---:|---:|\n";
printf "| %d | %s | %.3f | %.3f | %.3f | %.2f | %.2f |\n", @$_ for @rows;
print "\n(CPU: of the median run; PostgreSQL's is every process of the "
    . "cluster, WAL writer and checkpointer included.)\n";
