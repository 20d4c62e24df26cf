#!/usr/bin/perl
# SCEP issue throughput (see README.md here): distinct pre-generated
# PKCSReq messages (static challenge, RSA-2048 device keys, AES, SHA-256)
# replayed at concurrency 1, 8 and 64 against nginx with 2 workers, each
# answer then opened as the device would and its serial checked unique;
# GetCACaps and GetCACert requests per second; `openssl speed rsa2048`
# measured on the same machine just before.
#
#   perl bench/scep/bench.pl                 (or bench/scep/run.sh)
#   MDM_BENCH_N=3000 MDM_BENCH_LEVELS=1,8,64 perl bench/scep/bench.pl
#
# Self-contained: PostgreSQL and nginx are started by the test harness
# (t/lib/MDM/Test.pm) in a temporary directory, as `make run` would run
# them, and removed after.  The load generator is bench/scep/scep_client.c.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/../../t/lib";

use Time::HiRes qw(time);
use MDM::Test;

my $n = $ENV{MDM_BENCH_N} // 4000;          # messages per level (64)
my @levels = split /,/, $ENV{MDM_BENCH_LEVELS} // '1,8,64';
my $workers = $ENV{MDM_BENCH_WORKERS} // 2;
my $keys = $ENV{MDM_BENCH_KEYS} // 16;

die "module not built: run make module\n" unless MDM::Test->has_module;

my $t = MDM::Test->new(name => 'bench-scep');
$t->start_postgres(settings => { shared_buffers => '256MB',
                                 max_wal_size => '1GB' });

my $ca = $t->make_ca(name => 'bench-scep-ca', cn => 'bench SCEP CA');
my $repo = $t->repo_dir;
my $tool = $t->path('scep_client');

my $cc = $t->run_command([ 'cc', '-O2', '-o', $tool, "-I$repo/ngx_mdm_scep",
                           "$repo/bench/scep/scep_client.c",
                           map({ "$repo/ngx_mdm_scep/$_" }
                               qw(ngx_mdm_scep_pki.c ngx_mdm_scep_ca.c
                                  ngx_mdm_scep_client.c)),
                           '-lssl', '-lcrypto' ], timeout => 120);
die "cannot build scep_client: $cc->{stderr}" if $cc->{status};

my %conf_opts = (worker_processes => $workers, log_level => 'notice',
                 events => 'worker_connections 4096;');
$t->write_conf(<<"CONF", %conf_opts);
    mdm_postgres "%%PG%% sslmode=disable";
    mdm_postgres_pool_size 8;
    mdm_helper_path %%TESTDIR%%/helper;

    mdm_scep_ca_certificate $ca->{cert};
    mdm_scep_ca_key $ca->{key};
    mdm_scep_challenge bench-static-challenge;
    mdm_scep_serial_block 256;

    server {
        listen 127.0.0.1:%%PORT_0%% backlog=4096;
        keepalive_requests 1000000;

        location = /mdm/apple/scep { mdm_scep; }
        location = /status { mdm_status; }
    }
CONF
$t->run;

$t->wait_for(sub {
    $t->psql("SELECT to_regproc('mdm_scep_record') IS NOT NULL") eq 't';
}, timeout => 60, what => 'the schema (mdm_scep_record)');

my $url = 'http://127.0.0.1:' . $t->port(0) . '/mdm/apple/scep';

# the messages, before anything is timed

my %count = map { $_ => ($_ == 1 ? int($n / 8) : $_ == 8 ? int($n / 2)
                                                          : $n) } @levels;
my $gen = time;
for my $c (@levels) {
    my $dir = $t->path("msgs-$c");
    mkdir $dir;
    my $r = $t->run_command([ $tool, 'gen', '-n', $count{$c}, '-keys', $keys,
                              '-to', $ca->{cert}, '-dir', $dir,
                              '-challenge', 'bench-static-challenge' ],
                            timeout => 1200);
    die "gen: $r->{stderr}" if $r->{status};
}
printf "generated %d PKCSReq messages over %d RSA-2048 keys in %.1f s\n",
       eval { my $s = 0; $s += $_ for values %count; $s }, $keys,
       time - $gen;

# the ceiling: `openssl speed rsa2048` now.  Its default counts CPU time
# (blind to other processes sharing the machine): the ceiling is its signs
# per CPU-second over 3, times the cores, for the CPU-time view.  With
# -elapsed it counts wall time, for the wall-clock view; -multi runs one
# per core.

sub speed {
    my $r = $t->run_command([ 'openssl', 'speed', '-seconds', 3, @_,
                              'rsa2048' ], timeout => 120);
    my ($signs) = $r->{stdout} =~ /^rsa 2048 bits\s+\S+\s+\S+\s+([\d.]+)/m;
    die "no openssl speed figure\n$r->{stdout}$r->{stderr}" unless $signs;
    return $signs;
}

my $cores = cores();
my $signs_cpu = speed();
my $signs_wall = speed('-elapsed');
my $signs_multi = speed('-elapsed', '-multi', $cores);
printf "openssl speed rsa2048: %.0f signs per CPU-second; wall clock now: "
       . "%.0f signs/s one process, %.0f with -multi %d\n",
       $signs_cpu, $signs_wall, $signs_multi, $cores;

# replay

my @rows;
for my $c (@levels) {
    my $dir = $t->path("msgs-$c");
    my $serials0 = $t->psql('SELECT count(*) FROM mdm_certificates');
    my %cpu0 = cpu_by_role();

    # meanwhile one client asks GetCACaps every 10 ms: how long the RSA
    # work keeps the event loops from answering
    my $probe = open(my $probe_fh, '-|', $tool, 'run', '-url',
                     "$url?operation=GetCACaps", '-c', 1, '-interval', 10,
                     '-requests', 10_000_000)
        or die "probe: $!";

    my $r = $t->run_command([ $tool, 'run', '-url',
                              "$url?operation=PKIOperation", '-c', $c,
                              '-dir', $dir, '-n', $count{$c},
                              '-keys', $keys, '-verify', $ca->{cert} ],
                            timeout => 1200);
    kill 'TERM', $probe;
    my %probe = (join '', <$probe_fh>) =~ /(\w+)=([\d.]+)/g;
    close $probe_fh;
    die "run: $r->{stderr}" if $r->{status};
    my %cpu1 = cpu_by_role();
    my %f = $r->{stdout} =~ /(\w+)=([\d.]+)/g;
    my $recorded = $t->psql('SELECT count(*) FROM mdm_certificates')
                   - $serials0;
    my $unique = $t->psql('SELECT count(DISTINCT serial) = count(*) '
                          . 'FROM mdm_certificates');
    my %cpu = map { $_ => ($cpu1{$_} // 0) - ($cpu0{$_} // 0) } keys %cpu1;

    # CPU ms per issue: nginx and PostgreSQL from /proc, the load
    # generator's run (not its verification) from itself
    my $n_ok = $f{ok} || 1;
    my %ms = (nginx => 1000 * ($cpu{nginx} // 0) / $n_ok,
              postgres => 1000 * ($cpu{postgres} // 0) / $n_ok,
              client => $f{cpu_ms} / $n_ok);
    $ms{total} = $ms{nginx} + $ms{postgres} + $ms{client};

    push @rows, { op => 'PKIOperation PKCSReq', c => $c, f => \%f,
                  recorded => $recorded, unique => $unique, ms => \%ms,
                  probe => \%probe };
}

for my $op ('GetCACaps', 'GetCACert') {
    for my $c (1, 64) {
        my $r = $t->run_command([ $tool, 'run', '-url',
                                  "$url?operation=$op", '-c', $c,
                                  '-requests', $c == 1 ? 5000 : 50000 ],
                                timeout => 600);
        die "run: $r->{stderr}" if $r->{status};
        my %f = $r->{stdout} =~ /(\w+)=([\d.]+)/g;
        push @rows, { op => $op, c => $c, f => \%f };
    }
}

# the tables

my $ceiling_wall = $signs_wall / 3;
my $ceiling_cpu = $signs_cpu / 3 * $cores;

print "\n| operation | concurrency | requests | failed | per second "
      . "| p50 ms | p99 ms | % of ceiling now (wall) "
      . "| issued: answers opened, recorded, duplicate serials "
      . "| GetCACaps every 10 ms meanwhile: p50 / p99 / max ms |\n";
print "|---|---:|---:|---:|---:|---:|---:|---:|---|---|\n";
for my $row (@rows) {
    my ($f, $p) = ($row->{f}, $row->{probe});
    my $pki = defined $row->{ms};
    printf "| %s | %d | %d | %d | %.0f | %.2f | %.2f | %s | %s | %s |\n",
           $row->{op}, $row->{c}, $f->{requests}, $f->{failed}, $f->{rps},
           $f->{p50_ms}, $f->{p99_ms},
           $pki ? sprintf('%.0f%%', 100 * $f->{rps} / $ceiling_wall) : '',
           $pki ? sprintf('%d, %d, %d (table unique: %s)', $f->{issued},
                          $row->{recorded}, $f->{duplicate_serials},
                          $row->{unique})
                : '',
           $pki && $p->{requests}
                ? sprintf('%.2f / %.2f / %.2f', $p->{p50_ms}, $p->{p99_ms},
                          $p->{max_ms})
                : '';
}

printf "\n| concurrency | CPU ms per issue: nginx / PostgreSQL / load "
       . "generator = total | issues/s the %d cores allow | %% of %.0f "
       . "(one process's signs/s / 3) | %% of %.0f (all %d cores' / 3) |\n",
       $cores, $signs_cpu / 3, $ceiling_cpu, $cores;
print "|---:|---|---:|---:|---:|\n";
for my $row (grep { $_->{ms} } @rows) {
    my $ms = $row->{ms};
    my $cap = 1000 * $cores / $ms->{total};
    printf "| %d | %.2f / %.2f / %.2f = %.2f | %.0f | %.0f%% | %.0f%% |\n",
           $row->{c}, $ms->{nginx}, $ms->{postgres}, $ms->{client},
           $ms->{total}, $cap, 100 * $cap / ($signs_cpu / 3),
           100 * $cap / $ceiling_cpu;
}

printf "\nceiling = openssl speed rsa2048 signs / 3 private-key operations "
       . "per issue. Wall clock now: %.0f issues/s (one process), %.0f "
       . "(-multi %d). CPU time: %.0f signs per CPU-second, so %.0f per "
       . "core, %.0f for %d cores\n",
       $ceiling_wall, $signs_multi / 3, $cores, $signs_cpu, $signs_cpu / 3,
       $ceiling_cpu, $cores;
printf "machine: %d cores, load %s; nginx %d workers\n",
       $cores, loadavg(), $workers;

sub cores {
    open my $fh, '<', '/proc/cpuinfo' or return 1;
    return scalar grep { /^processor\s*:/ } <$fh>;
}

sub loadavg {
    open my $fh, '<', '/proc/loadavg' or return '?';
    return join ' ', (split ' ', <$fh>)[0 .. 2];
}

# utime + stime of nginx (master, workers, helper) and of PostgreSQL
sub cpu_by_role {
    my %cpu;
    my $pgpid = $t->pg_pid // -1;
    my $master = $t->master_pid // -1;
    opendir my $dh, '/proc' or return;
    for my $pid (grep { /^\d+$/ } readdir $dh) {
        open my $fh, '<', "/proc/$pid/stat" or next;
        my $stat = <$fh> // next;
        $stat =~ s/^.*\)\s+//;
        my @f = split ' ', $stat;
        my ($ppid, $ut, $st) = @f[1, 11, 12];
        my $role = ($pid == $master || $ppid == $master) ? 'nginx'
                 : ($pid == $pgpid || $ppid == $pgpid) ? 'postgres'
                 : undef;
        $cpu{$role} += ($ut + $st) / 100 if $role;
    }
    return %cpu;
}
