#!/usr/bin/perl
# Check-in and command bench (see README.md here): enrollment, Idle polls
# and command round trips of N simulated devices (build/bench/mdmload),
# over mutual TLS and with the certificate forwarded by a trusted load
# balancer, against PostgreSQL with its default durability (fsync,
# synchronous_commit and full_page_writes on), Redis and nginx started by
# the test harness (t/lib/MDM/Test.pm) in a temporary directory.
#
#   perl bench/checkin/bench.pl [scenario ...]
#       scenarios: tls-1k tls-10k fwd-1k fwd-10k conn-5k nocache-1k
#       (default: all); MDM_BENCH_SECONDS (default 10) per phase;
#       MDM_BENCH_PAUSE (seconds of rest before each scenario, default 20)
#
# Prints the RESULT lines of mdmload and a summary table (markdown).

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/../../t/lib";

use MDM::Test;

my $seconds = $ENV{MDM_BENCH_SECONDS} // 10;
# MDM_BENCH_TLS="directive ...;" adds to the TLS server (experiments, not
# for the figures)
my $tls_extra = $ENV{MDM_BENCH_TLS} // '';
# MDM_BENCH_HTTP="directive ...;" adds to the http block (experiments too)
my $http_extra = $ENV{MDM_BENCH_HTTP} // '';
my %scenarios = (
    'tls-1k'     => { mode => 'tls', n => 1000, workers => 2,
                      args => [ '--idle-c', '64', '--cmd-c', '8,64' ] },
    'tls-10k'    => { mode => 'tls', n => 10000, workers => 2,
                      args => [ '--idle-c', '64', '--cmd-c', '8,64' ] },
    'fwd-1k'     => { mode => 'forwarded', n => 1000, workers => 2,
                      args => [ '--idle-c', '64', '--cmd-c', '8,64' ] },
    'fwd-10k'    => { mode => 'forwarded', n => 10000, workers => 2,
                      args => [ '--idle-c', '64', '--cmd-c', '8,64' ] },
    'fwd-10k-rsa' => { mode => 'forwarded', n => 10000, workers => 2,
                      args => [ '--idle-c', '64', '--cmd-c', '8,64',
                                '--device-key', 'rsa' ] },
    'conn-5k'    => { mode => 'tls', n => 5000, workers => 1,
                      worker_connections => 8192,
                      args => [ '--idle-c', '64', '--idle-rate', '5000' ] },
    # the same with RSA-2048 device keys, what our SCEP payload asks for
    # (not run by default: same RSS as EC P-256, 108.4 MB)
    'conn-5k-rsa' => { mode => 'tls', n => 5000, workers => 1,
                      worker_connections => 8192,
                      args => [ '--idle-c', '64', '--idle-rate', '5000',
                                '--device-key', 'rsa' ] },
    # enrollment only, 10,000 devices (not run by default; for A/B runs)
    'enroll-fwd' => { mode => 'forwarded', n => 10000, workers => 2,
                      args => [] },
    'enroll-tls' => { mode => 'tls', n => 10000, workers => 2,
                      args => [] },
    # command round trips only (not run by default; for profiling)
    'cmd-1k'     => { mode => 'forwarded', n => 1000, workers => 2,
                      args => [ '--cmd-c', '8' ] },
    'small'      => { mode => 'tls', n => 200, workers => 2,
                      args => [ '--cmd-c', '8' ] },
    'nocache-1k' => { mode => 'tls', n => 1000, workers => 2,
                      cache => 'off', prepare => 'off',
                      args => [ '--idle-c', '64' ] },
);
my @order = qw(tls-1k tls-10k fwd-1k fwd-10k conn-5k nocache-1k);
my @run = @ARGV ? @ARGV : @order;
for (@run) { die "unknown scenario $_ (@order)\n" unless $scenarios{$_} }

my $t = MDM::Test->new(name => 'bench-checkin');
die "build the module first (make module)\n" unless $t->has_module;

my $repo = $t->repo_dir;
my $r = $t->run_command([ 'make', '-s', '-C', "$repo/bench/checkin" ]);
die "building mdmload failed: $r->{stdout}$r->{stderr}\n" if $r->{status};
my $tool = "$repo/build/bench/mdmload";

$t->start_postgres(settings => {
    fsync => 'on', synchronous_commit => 'on', full_page_writes => 'on',
    shared_buffers => '256MB', max_connections => 200,
    shared_preload_libraries => 'pg_stat_statements',
    'pg_stat_statements.track' => 'all',
    track_wal_io_timing => 'on',
    # MDM_BENCH_PG="name=value ..." for experiments (not for the figures)
    map { split /=/, $_, 2 } split ' ', $ENV{MDM_BENCH_PG} // '',
});
$t->psql('CREATE EXTENSION IF NOT EXISTS pg_stat_statements');
$t->start_redis;

my $pki = $t->path('pki');
mkdir $pki;
# MDM_BENCH_CA_KEY=ec: an EC P-256 device CA (figures before 2026-11-28);
# MDM_BENCH_SERVER_KEY=rsa: an RSA-2048 TLS server key
$r = $t->run_command([ $tool, 'gen', $pki,
                       '--ca-key', $ENV{MDM_BENCH_CA_KEY} // 'rsa',
                       '--server-key', $ENV{MDM_BENCH_SERVER_KEY} // 'ec' ]);
die "mdmload gen: $r->{stderr}\n" if $r->{status};

my @results;

# MDM_BENCH_PAUSE=S: S seconds of rest before each scenario (default 20,
# as for the figures in README.md; 0 for none).  On this VM the disk slows
# down under sustained writes: three cmd-1k runs back to back gave 1,425,
# 977 and 546 round trips/s; with 20 s between runs, 1,575 and 1,600.
my $pause = $ENV{MDM_BENCH_PAUSE} // 20;

for my $name (@run) {
    my $s = $scenarios{$name};
    sleep $pause if $pause;
    my $cache = $s->{cache} // 'on';
    my $prepare = $s->{prepare} // 'on';

    $t->stop if $t->master_pid;
    $t->write_conf(<<"EOF",
    mdm_postgres "%%PG%% sslmode=disable";
    mdm_postgres_pool_size 16;
    mdm_redis %%REDIS%%;
    mdm_helper_path %%TESTDIR%%/helper;
    mdm_checkin_events_maxlen 100000;
    mdm_checkin_cache $cache;
    mdm_checkin_prepare $prepare;
    $http_extra

    keepalive_timeout 600s;
    keepalive_requests 10000000;
    client_body_buffer_size 16k;

    server {
        listen 127.0.0.1:%%PORT_0%% ssl;
        server_name localhost;

        ssl_certificate $pki/server.pem;
        ssl_certificate_key $pki/server.key;
        ssl_verify_client optional_no_ca;
        ssl_session_cache off;
        ssl_session_tickets off;
        ssl_buffer_size 4k;
        $tls_extra

        mdm_checkin_ca $pki/ca.pem;

        location = /mdm/apple/mdm { mdm_checkin; }
    }

    server {
        listen 127.0.0.1:%%PORT_1%%;

        mdm_checkin_ca $pki/ca.pem;

        location = /mdm/apple/mdm {
            mdm_checkin;
            mdm_checkin_forwarded_header Client-Cert;
            mdm_checkin_trusted_proxy 127.0.0.1;
        }
    }
EOF
        worker_processes => $s->{workers},
        ($ENV{MDM_BENCH_MAIN} ? (main => $ENV{MDM_BENCH_MAIN}) : ()),
        log_level => 'notice',
        events => 'worker_connections '
                  . ($s->{worker_connections} // 20000) . ';');
    $t->run;

    $t->wait_for(sub {
        $t->psql("SELECT count(*) FROM pg_trigger "
                 . "WHERE tgname = 'mdm_queue_notify_insert'") == 1
    }, timeout => 30, what => 'the helper to apply the schema');

    # the workers' LISTEN connections (the Idle cache) are up
    if ($cache eq 'on') {
        $t->wait_for(sub {
            $t->psql("SELECT count(*) FROM pg_stat_activity "
                     . "WHERE application_name = 'nginx-mdm listen'") >= $s->{workers}
        }, timeout => 30, what => 'the workers to LISTEN');
    }

    my $port = $s->{mode} eq 'tls' ? $t->port(0) : $t->port(1);
    my @cmd = ($tool, 'run', $pki, '--port', $port, '--mode', $s->{mode},
               '-n', $s->{n}, '--seconds', $seconds,
               '--pg', $t->pg_conninfo, '--enroll-c', 64,
               '--cpu', 'nginx=' . $t->master_pid,
               '--cpu', 'postgres=' . $t->pg_pid,
               '--cpu', 'redis=' . $t->redis_pid,
               @{ $s->{args} });

    print "# $name: @cmd[2 .. $#cmd]\n";
    $r = $t->run_command(\@cmd, timeout => 600);
    print $r->{stdout};
    print STDERR $r->{stderr} if $r->{status} || $ENV{MDM_BENCH_VERBOSE};
    die "mdmload failed in $name ($r->{status})\n" if $r->{status};

    my $load = (split ' ', $t->read_file('/proc/loadavg') // '')[0] // '?';
    print "# load average after $name: $load\n";

    for my $line (grep { /^RESULT / } split /\n/, $r->{stdout}) {
        my %f = map { split /=/, $_, 2 } grep { /=/ } split ' ', $line;
        $f{load} = $load;
        $f{scenario} = $name;
        $f{workers} = $s->{workers};
        $f{cache} = $cache;
        push @results, \%f;
    }

    my @alerts = $t->log_alerts;
    print "# alerts in error.log: @alerts\n" if @alerts;
}

$t->stop;

# the summary

print "\n| scenario | phase | devices | c | rate | p50 ms | p99 ms |"
    . " errors | nginx CPU | PostgreSQL CPU | Redis CPU | mdmload CPU |"
    . " worker RSS MB | SQL/request (top / all) | DB round trips/request |"
    . " WAL flushes/s | load |\n";
print "|---" x 17, "|\n";

for my $f (@results) {
    my $unit = $f->{phase} eq 'enroll' ? 'devices'
             : $f->{phase} eq 'commands' ? 'round_trips' : 'requests';
    my $p50 = $f->{"${unit}_p50_ms"} // $f->{req_p50_ms};
    my $p99 = $f->{"${unit}_p99_ms"} // $f->{req_p99_ms};
    printf "| %s | %s | %s | %s | %s %s/s | %s | %s | %s | %s | %s | %s |"
           . " %s | %s | %s | %s | %s | %s |\n",
        $f->{scenario}, $f->{phase}, $f->{devices}, $f->{c},
        $f->{"${unit}_per_s"}, $unit =~ s/_/ /r, $p50, $p99, $f->{errors},
        $f->{cpu_nginx}, $f->{cpu_postgres}, $f->{cpu_redis},
        $f->{cpu_mdmload}, $f->{nginx_worker_rss_mb},
        defined $f->{sql_top_per_req}
            ? "$f->{sql_top_per_req} / $f->{sql_all_per_req}" : 'n/a',
        $f->{db_roundtrips_per_req} // 'n/a',
        $f->{wal_flushes_per_s} // 'n/a', $f->{load};
}
