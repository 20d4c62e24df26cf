#!/usr/bin/perl
# APNs push throughput: N enrollments with a push request each, pushed
# through a fast fake APNs (nginx alone: TLS, HTTP/2, client certificate,
# `return 200`).  Measures the time from the requests being written to the
# last push answered and to the last one recorded in PostgreSQL, and the
# helper's memory.
#
#   perl bench/apns/bench.pl [N]          (default 100000)
#   MDM_BENCH_CONCURRENCY=200 MDM_BENCH_BATCH=2000 perl bench/apns/bench.pl
#
# Self-contained: PostgreSQL, Redis and nginx are started by the test
# harness (t/lib/MDM/Test.pm) in a temporary directory and removed after.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/../../t/lib";

use IO::Socket::IP;
use JSON::PP ();
use Time::HiRes qw(time sleep);
use MDM::Test;

my $n = shift // 100_000;
my $concurrency = $ENV{MDM_BENCH_CONCURRENCY} // 100;
my $batch = $ENV{MDM_BENCH_BATCH} // 1000;
my $workers = $ENV{MDM_BENCH_WORKERS} // 1;

# the fake's answer: "read" reads the body first, as APNs does; "return"
# answers from the headers alone (nginx then resets the stream, which
# exercises the module's early-answer handling: see README.md)
my $fake = $ENV{MDM_BENCH_FAKE} // 'read';
my $answer = $fake eq 'return' ? <<'RETURN' : <<'READ';
        location /3/device/ {
            add_header apns-id $request_id;
            return 200;
        }
RETURN
        # APNs reads the body before it answers, and so does this fake:
        # the mirror reads it (precontent phase), the static module finds
        # no file, and the 404 becomes the 200.  A plain "return 200" would
        # answer before the body and reset the stream.
        location /3/device/ {
            mirror /read-body;
            mirror_request_body on;
            log_not_found off;
            error_page 404 =200 @ok;
        }

        location @ok {
            add_header apns-id $request_id;
            return 200;
        }

        location = /read-body {
            internal;
            return 204;
        }
READ

die "module not built: run make module\n" unless MDM::Test->has_module;

my $t = MDM::Test->new(name => 'bench-apns');
$t->start_postgres(settings => { shared_buffers => '256MB',
                                 max_wal_size => '1GB' });
$t->start_redis;

my $tls = $t->tls_server_cert;
my $ca = $t->make_ca(name => 'apns-push-ca');
my $uuid = 'BBBBBBBB-2222-4222-8222-222222222222';
my $topic = "com.apple.mgmt.External.$uuid";
my $push = $t->make_cert(ca => $ca, name => 'push',
                         subject => "/CN=APSP:$uuid/UID=$topic",
                         ext => 'clientAuth');

my %conf_opts = (worker_processes => $workers, log_level => 'notice');
$t->write_conf(<<"CONF", %conf_opts);
    mdm_postgres "%%PG%% sslmode=disable";
    mdm_redis %%REDIS%%;
    mdm_helper_path %%TESTDIR%%/helper;

    mdm_apns_certificate $push->{cert};
    mdm_apns_certificate_key $push->{key};
    mdm_apns_endpoint https://127.0.0.1:%%PORT_apns%%;
    mdm_apns_trusted_certificate $tls->{ca}{cert};
    mdm_apns_concurrency $concurrency;
    mdm_apns_batch_size $batch;

    # the fake APNs
    server {
        listen 127.0.0.1:%%PORT_apns%% ssl http2;
        ssl_certificate $tls->{cert};
        ssl_certificate_key $tls->{key};
        ssl_verify_client on;
        ssl_client_certificate $ca->{cert};
        keepalive_requests 100000000;
        http2_max_concurrent_streams 1000;

$answer    }

    server {
        listen 127.0.0.1:%%PORT_0%%;
        location = /apns { mdm_apns_status; }
    }
CONF

$t->run;
$t->wait_for_log(qr/mdm apns push started/, 30);
my ($helper) = $t->pids_by_title(qr/mdm helper process/);

printf "seeding %d enrollments...\n", $n;
$t->psql(<<"SQL", timeout => 600);
INSERT INTO mdm_enrollments (id, device_id, channel, enrollment_type,
    enabled, topic, push_token, push_magic, last_seen_at)
SELECT 'bench-' || i, 'bench-' || i, 'device', 'Device', true, '$topic',
       decode(lpad(to_hex(i), 64, '0'), 'hex'),
       md5(i::text), now()
FROM generate_series(1, $n) i;
VACUUM ANALYZE mdm_enrollments;
SQL

my $rss0 = rss($helper);
my $sent0 = status()->{counters}{sent};
my %cpu0 = cpu_by_role();

# the writers' contract, for all of them at once
my $start = time;
my $queued = $t->psql("SELECT mdm_push_request(array_agg(id)) "
                      . "FROM mdm_enrollments WHERE id LIKE 'bench-%'",
                      timeout => 600);
$t->redis_cli('PUBLISH', 'mdm:push', '');
my $written = time - $start;

my ($peak, $s) = (0, undef);
for (;;) {
    $s = status();
    my $rss = rss($helper);
    $peak = $rss if $rss > $peak;
    last if $s->{counters}{sent} - $sent0 >= $n;
    die "timed out\n" if time - $start > 300;
    sleep 0.05;
}
my $pushed = time - $start;

$t->wait_for(sub { $t->psql('SELECT count(*) FROM mdm_push_requests') == 0 },
             timeout => 60, what => 'every request to be recorded');
my $recorded = time - $start;

my $hwm = hwm($helper);
my %cpu1 = cpu_by_role();

printf "requests written:         %d in %.2f s (mdm_push_request + PUBLISH)\n",
       $queued, $written;
printf "all sent (200 from APNs): %.2f s after the write began, "
       . "%.0f pushes/s\n", $pushed, $n / $pushed;
printf "all recorded (rows gone): %.2f s\n", $recorded;
printf "helper RSS:               %.1f MB before, %.1f MB peak sampled, "
       . "VmHWM %.1f MB\n", $rss0 / 1024, $peak / 1024, $hwm / 1024;
printf "helper connections:       %d opened; failed %d, retried %d\n",
       $s->{counters}{connections}, $s->{counters}{failed},
       $s->{counters}{retried};
printf "CPU seconds:              %s\n", join ', ',
       map { sprintf '%s %.2f', $_, ($cpu1{$_} // 0) - ($cpu0{$_} // 0) }
       sort keys %cpu1;
printf "settings:                 concurrency %d, batch %d, fake %s, "
       . "nginx workers %d, %d cores, load %s\n",
       $concurrency, $batch, $fake, $workers, cores(), loadavg();

# one row for `make bench`'s summary
print "\n| pushes | written | all sent | all recorded | pushes/s "
    . "| helper peak RSS | CPU s helper / nginx / postgres | load |\n"
    . "|---|---|---|---|---|---|---|---|\n";
printf "| %d | %.1f s | %.1f s | %.1f s | %.0f | %.1f MB | %s | %s |\n",
       $n, $written, $pushed, $recorded, $n / $pushed,
       ($hwm > $peak ? $hwm : $peak) / 1024,
       join(' / ', map { sprintf '%.1f', ($cpu1{$_} // 0) - ($cpu0{$_} // 0) }
                   qw(helper nginx-worker postgres)),
       loadavg();

sub status {
    my $sock = IO::Socket::IP->new(PeerHost => '127.0.0.1',
                                   PeerPort => $t->port(0)) or die "$!\n";
    print $sock "GET /apns HTTP/1.0\r\n\r\n";
    local $/;
    my $r = <$sock>;
    $r =~ s/^.*?\r\n\r\n//s;
    return JSON::PP->new->decode($r);
}

sub proc_kb {
    my ($pid, $key) = @_;
    open my $fh, '<', "/proc/$pid/status" or return 0;
    for (<$fh>) { return $1 if /^$key:\s+(\d+)/ }
    return 0;
}

# utime + stime of the helper, the nginx workers and PostgreSQL's processes
sub cpu_by_role {
    my %cpu;
    my $tck = 100;
    my $pgpid = $t->pg_pid;
    opendir my $dh, '/proc' or return;
    for my $pid (grep { /^\d+$/ } readdir $dh) {
        open my $fh, '<', "/proc/$pid/stat" or next;
        my $stat = <$fh> // next;
        $stat =~ s/^.*\)\s+//;
        my @f = split ' ', $stat;
        my ($ppid, $ut, $st) = @f[1, 11, 12];
        my $role = $pid == $helper ? 'helper'
                 : $pid == ($pgpid // -1) || $ppid == ($pgpid // -1)
                   ? 'postgres'
                 : $ppid == ($t->master_pid // -1) ? 'nginx-worker'
                 : next;
        $cpu{$role} += ($ut + $st) / $tck;
    }
    return %cpu;
}

sub rss { proc_kb($_[0], 'VmRSS') }
sub hwm { proc_kb($_[0], 'VmHWM') }

sub loadavg {
    open my $fh, '<', '/proc/loadavg' or return '?';
    return (split ' ', <$fh>)[0];
}

sub cores {
    open my $fh, '<', '/proc/cpuinfo' or return 0;
    return scalar grep { /^processor/ } <$fh>;
}
