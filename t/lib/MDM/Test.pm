package MDM::Test;

# Integration test harness for nginx-mdm, in the spirit of Test::Nginx from
# nginx-tests: every test file gets its own directory, PostgreSQL cluster,
# Redis and nginx, and everything is stopped and removed at the end.
# The POD at the bottom documents every public method.

use strict;
use warnings;

use Carp qw(croak);
use Cwd qw(abs_path);
use Digest::SHA qw(sha256_hex);
use Fcntl qw(:flock);
use File::Basename qw(basename dirname);
use File::Path qw(make_path remove_tree);
use File::Spec;
use File::Temp qw(tempdir);
use IO::Socket::IP;
use IO::Socket::UNIX;
use JSON::PP ();
use MIME::Base64 qw(decode_base64);
use POSIX qw(WNOHANG strftime);
use Time::HiRes qw(sleep time);
use Test::More ();

our $VERSION = '1.00';

###########################################################################
# Where things are.  Every default can be overridden from the environment.

my $REPO = abs_path(dirname(__FILE__) . '/../../..');

my $NGINX   = $ENV{MDM_NGINX} // '/usr/sbin/nginx';
my $NGINX_PRELOAD = $ENV{MDM_NGINX_PRELOAD};   # e.g. libasan for test-asan
my $MODULE  = File::Spec->rel2abs($ENV{MDM_MODULE}
                                  // "$REPO/build/ngx_mdm_module.so");
my $VECTORS = File::Spec->rel2abs($ENV{MDM_VECTORS}
                                  // "$REPO/../shared/vectors");
$VECTORS = abs_path($VECTORS) // $VECTORS;      # without "..", if it exists
my $CURL    = $ENV{MDM_CURL} // 'curl';
my $OPENSSL = $ENV{MDM_OPENSSL} // 'openssl';
my $REDIS_SERVER = $ENV{MDM_REDIS_SERVER} // 'redis-server';
my $REDIS_CLI    = $ENV{MDM_REDIS_CLI} // 'redis-cli';
my $PG_BINDIR    = $ENV{MDM_PG_BINDIR} // _newest_pg_bindir();

my $TMPBASE = $ENV{TMPDIR} || '/tmp';

# Slow machines and sanitizer builds stretch every deadline by this factor.
my $TIMEOUT_SCALE = $ENV{MDM_TIMEOUT_SCALE} || 1;

my $IS_ROOT = $> == 0;

sub _newest_pg_bindir {
    my @dirs = sort { $b->[0] <=> $a->[0] }
               map { m{/(\d+)/bin$} ? [$1, $_] : () }
               glob '/usr/lib/postgresql/*/bin';
    return @dirs ? $dirs[0][1] : '';
}

sub _pg_bin { $PG_BINDIR ? "$PG_BINDIR/$_[0]" : $_[0] }

sub repo_dir    { $REPO }
sub module_path { $MODULE }
sub vectors_dir { $VECTORS }
sub nginx_binary { $NGINX }

###########################################################################
# Construction and cleanup

my @LIVE;           # every harness object of this process, for END

sub new {
    my ($class, %opts) = @_;

    my $name = $opts{name} // basename($0, '.t');
    $name =~ s/[^\w.-]+/_/g;

    my $dir = tempdir("mdm-$name-XXXXXX", DIR => $TMPBASE);
    chmod 0755, $dir or die "chmod $dir: $!\n";   # postgres must traverse it
    mkdir "$dir/tmp" or die "mkdir $dir/tmp: $!\n";

    my $self = bless {
        name      => $name,
        dir       => $dir,
        no_module => $opts{no_module} ? 1 : 0,
        owner     => $$,        # forked children never clean up
        ports     => {},
        port_locks => [],
        spawned   => [],
        seq       => 0,
    }, $class;

    push @LIVE, $self;

    # END blocks do not run on a fatal signal: turn INT and TERM into exit.
    for my $sig (qw(INT TERM)) {
        next if defined $SIG{$sig} && $SIG{$sig} ne 'DEFAULT';
        $SIG{$sig} = sub { exit 128 + ($sig eq 'INT' ? 2 : 15) };
    }

    return $self;
}

sub dir  { $_[0]{dir} }
sub name { $_[0]{name} }

END {
    my $failed = $? != 0;
    local ($?, $!, $@);     # keep the test's exit status
    for my $t (@LIVE) {
        eval { $t->cleanup(failed => $failed); 1 }
            or warn "MDM::Test cleanup: $@";
    }
}

sub cleanup {
    my ($self, %opts) = @_;

    return if $self->{cleaned} || $self->{owner} != $$;
    $self->{cleaned} = 1;

    my $failed = $opts{failed} || !Test::More->builder->is_passing;
    if ($failed && -s "$self->{dir}/error.log") {
        Test::More::diag("nginx error.log tail:\n"
                         . _tail("$self->{dir}/error.log", 30));
    }

    my @errors;
    for my $step (qw(_cleanup_nginx _cleanup_spawned stop_redis
                     _cleanup_postgres))
    {
        eval { $self->$step; 1 } or push @errors, $@;
    }

    unlink @{ $self->{port_locks} };

    if ($ENV{TEST_KEEP}) {
        Test::More::diag("TEST_KEEP: test directory kept in $self->{dir}");
    } else {
        remove_tree($self->{dir});
    }

    die join '', @errors if @errors;
}

###########################################################################
# TCP ports: random ones below Linux's ephemeral range (32768+), so that no
# outgoing connection takes them.  A lock file in a directory shared by
# every test file keeps tests that run in parallel (prove -j) apart (a lock
# whose process is gone is taken over); the bind test keeps us off ports
# that something else already uses.

my $PORT_LOCKS = "$TMPBASE/mdm-test-ports";

sub port {
    my ($self, $n) = @_;
    croak 'port() needs a name or number' unless defined $n;
    return $self->{ports}{$n} if defined $self->{ports}{$n};
    croak "port($n) first used in a forked child: call it before spawn()"
        if $self->{owner} != $$;
    return $self->{ports}{$n} = $self->_reserve_port;
}

sub _reserve_port {
    my ($self) = @_;

    mkdir $PORT_LOCKS, 01777 and chmod 01777, $PORT_LOCKS;

    my %mine = map { $_ => 1 } grep { defined } values %{ $self->{ports} };

    for (1 .. 200) {
        my $port = 10000 + int rand 22000;
        next if $mine{$port};

        my $lock = "$PORT_LOCKS/$port";
        my $owner = _read_pid($lock);
        unlink $lock if $owner && !_alive($owner);
        sysopen my $fh, $lock, POSIX::O_WRONLY | POSIX::O_CREAT
                               | POSIX::O_EXCL
            or next;
        print $fh "$$\n";
        close $fh;

        my $sock = IO::Socket::IP->new(
            LocalHost => '127.0.0.1', LocalPort => $port,
            Proto => 'tcp', Listen => 1, ReuseAddr => 1);
        if ($sock) {
            close $sock;
            push @{ $self->{port_locks} }, $lock;
            return $port;
        }
        unlink $lock;
    }

    die "no free TCP port found\n";
}

###########################################################################
# Files, commands and waiting

sub path {
    my ($self, $name) = @_;
    return $name =~ m{^/} ? $name : "$self->{dir}/$name";
}

sub write_file {
    my ($self, $name, $content) = @_;
    my $path = $self->path($name);
    make_path(dirname($path));
    open my $fh, '>:raw', $path or die "write $path: $!\n";
    print $fh $content;
    close $fh or die "write $path: $!\n";
    return $path;
}

sub read_file {
    my ($self, $name) = @_;
    return _slurp($self->path($name));
}

sub _slurp {
    my ($path) = @_;
    open my $fh, '<:raw', $path or return undef;
    local $/;
    my $content = <$fh>;
    return $content // '';
}

sub _tail {
    my ($path, $lines) = @_;
    my @all = split /\n/, _slurp($path) // '';
    splice @all, 0, -$lines if @all > $lines;
    return join "\n", @all;
}

# Runs a command to completion: stdin from a string, stdout and stderr into
# files (never pipes, so that a daemon that keeps them open cannot hang us).
sub run_command {
    my ($self, $argv, %opts) = @_;

    my $base = sprintf '%s/tmp/cmd-%d-%d', $self->{dir}, $$, ++$self->{seq};
    $self->write_file("$base.in", $opts{stdin} // '');

    my $pid = fork // die "fork: $!\n";
    if ($pid == 0) {
        open STDIN, '<', "$base.in";
        open STDOUT, '>', "$base.out";
        open STDERR, '>', "$base.err";
        chdir $opts{cwd} if defined $opts{cwd};
        @ENV{ keys %{ $opts{env} } } = values %{ $opts{env} } if $opts{env};
        { exec { $argv->[0] } @$argv }
        print STDERR "exec $argv->[0]: $!\n";
        POSIX::_exit(127);
    }

    # A blocking wait with an alarm as the deadline: no polling latency on
    # the hundreds of short commands a test runs.
    my $timeout = ($opts{timeout} // 60) * $TIMEOUT_SCALE;
    my $outer = alarm 0;            # a test's own alarm, restored below
    my $started = time;
    my $status = eval {
        local $SIG{ALRM} = sub { die "timeout\n" };
        Time::HiRes::alarm($timeout);
        waitpid $pid, 0;
        Time::HiRes::alarm(0);
        $?;
    };
    Time::HiRes::alarm(0);
    alarm(($outer - int(time - $started)) || 1) if $outer;

    if (!defined $status) {
        kill 'KILL', $pid;
        waitpid $pid, 0;
        die "timed out after ${timeout}s waiting for @$argv\n";
    }

    my %result = (
        status => $status >> 8,
        signal => $status & 127,
        stdout => _slurp("$base.out"),
        stderr => _slurp("$base.err"),
    );
    unlink "$base.in", "$base.out", "$base.err";
    return \%result;
}

sub wait_for {
    my ($self, $cond, %opts) = @_;

    my $timeout = ($opts{timeout} // 10) * $TIMEOUT_SCALE;
    my $deadline = time + $timeout;
    my $interval = 0.005;

    while (1) {
        my $result = $cond->();
        return $result if $result;

        if (time > $deadline) {
            my $msg = sprintf "timed out after %.1fs waiting for %s",
                              $timeout, $opts{what} // 'a condition';
            $msg .= "\n" . $opts{diag}->() if $opts{diag};
            die "$msg\n";
        }

        sleep $interval;
        $interval *= 2 if $interval < 0.025;
    }
}

# Processes: /proc tells whether a pid lives, its parent and its title.
# A zombie counts as dead: daemons are reparented to a pid 1 that may never
# reap them.

sub _proc_stat {
    my ($pid) = @_;
    my $stat = _slurp("/proc/$pid/stat") // return;
    my ($state, $ppid) = $stat =~ /.*\) (\S) (\d+)/s or return;
    return ($state, $ppid);
}

sub _alive {
    my ($pid) = @_;
    return 0 unless $pid;
    my ($state) = _proc_stat($pid);
    return defined $state && $state ne 'Z';
}

sub _title {
    my ($pid) = @_;
    my $cmdline = _slurp("/proc/$pid/cmdline") // return '';
    $cmdline =~ s/\0+\z//;
    $cmdline =~ tr/\0/ /;
    $cmdline =~ s/\s+\z//;
    return $cmdline;
}

sub _children {
    my ($parent) = @_;
    opendir my $dh, '/proc' or die "opendir /proc: $!\n";
    my @kids;
    for my $pid (grep { /^\d+$/ } readdir $dh) {
        my ($state, $ppid) = _proc_stat($pid);
        push @kids, $pid if defined $ppid && $ppid == $parent
                            && $state ne 'Z';
    }
    return sort { $a <=> $b } @kids;
}

sub _read_pid {
    my ($file) = @_;
    my $pid = _slurp($file) // return;
    return $pid =~ /^(\d+)/ ? $1 : undef;
}

# Waits for a pid to end, escalating from $signal to KILL if it does not.
sub _terminate {
    my ($self, $pid, $signal, $timeout) = @_;
    return unless _alive($pid);
    kill $signal, $pid;
    return if eval { $self->wait_for(sub { !_alive($pid) },
                                     timeout => $timeout,
                                     what => "pid $pid to exit"); };
    kill 'KILL', $pid;
    $self->wait_for(sub { !_alive($pid) }, timeout => 5,
                    what => "pid $pid to die of SIGKILL");
    die "pid $pid ignored SIG$signal for ${timeout}s and was killed\n";
}

###########################################################################
# Background helpers a test starts itself (a fake Apple server, a load
# generator): a code reference runs in a forked child, an array reference is
# executed.  All are killed at cleanup.

sub spawn {
    my ($self, $what, %opts) = @_;

    my $log = $self->path($opts{log} // sprintf 'spawn-%d.log',
                                                scalar @{ $self->{spawned} });

    my $pid = fork // die "fork: $!\n";
    if ($pid == 0) {
        open STDIN, '<', '/dev/null';
        open STDOUT, '>>', $log;
        open STDERR, '>&', \*STDOUT;
        if (ref $what eq 'CODE') {
            my $ok = eval { $what->(); 1 };
            print STDERR $@ unless $ok;
            POSIX::_exit($ok ? 0 : 1);
        }
        { exec { $what->[0] } @$what }
        print STDERR "exec $what->[0]: $!\n";
        POSIX::_exit(127);
    }

    push @{ $self->{spawned} }, $pid;
    return $pid;
}

sub stop_spawned {
    my ($self, $pid) = @_;
    kill 'TERM', $pid;
    my $done = eval {
        $self->wait_for(sub { waitpid($pid, WNOHANG) != 0 }, timeout => 5,
                        what => "spawned pid $pid to exit");
    };
    if (!$done) {
        kill 'KILL', $pid;
        waitpid $pid, 0;
    }
    @{ $self->{spawned} } = grep { $_ != $pid } @{ $self->{spawned} };
    return $?;
}

sub _cleanup_spawned {
    my ($self) = @_;
    my @pids = @{ $self->{spawned} };
    $self->stop_spawned($_) for @pids;
}

###########################################################################
# What is slow to make and need not differ between tests (RSA keys, a fresh
# initdb) is made once per machine in a shared cache and copied.  An entry
# is built under a lock (tests running in parallel wait for the first one)
# and a temporary name renamed into place (a killed build leaves no half
# entry).  MDM_NO_CACHE=1 makes everything anew.

my $CACHE = "$TMPBASE/mdm-test-cache-$>";

sub _from_cache {
    my ($self, $name, $target, $make) = @_;

    return $make->($target) if $ENV{MDM_NO_CACHE};

    my $entry = "$CACHE/$name";
    if (!-e $entry) {
        mkdir $CACHE, 0755;
        open my $lock, '>', "$CACHE/.$name.lock" or die "lock $name: $!\n";
        flock $lock, LOCK_EX or die "flock $name: $!\n";
        if (!-e $entry) {
            my $tmp = "$CACHE/.$name.$$";
            remove_tree($tmp);
            $make->($tmp);
            rename $tmp, $entry or die "rename $tmp: $!\n";
        }
        close $lock;
    }

    my $r = $self->run_command([ 'cp', '-a', '--reflink=auto',
                                 $entry, $target ]);
    die "cp $entry $target: $r->{stderr}\n" if $r->{status};
    return $target;
}

###########################################################################
# PostgreSQL: a cluster per test file, made by initdb as the postgres user
# when we are root (initdb and pg_ctl refuse to run as root), listening on
# 127.0.0.1 and on a socket in the test directory.

my $PG_DB = 'mdm_test';         # made in the cluster template
my %PG_STOP_SIGNAL = (smart => 'TERM', fast => 'INT', immediate => 'QUIT');

sub _as_postgres {
    my (@argv) = @_;
    return @argv unless $IS_ROOT;
    return ('runuser', '-u', 'postgres', '--', @argv);
}

sub start_postgres {
    my ($self, %opts) = @_;

    my $pg = $self->{pg} //= {
        dir  => "$self->{dir}/pg",
        data => "$self->{dir}/pg/data",
        log  => "$self->{dir}/pg/postgres.log",
        db   => $opts{db} // $PG_DB,
        user => 'postgres',
        settings => {},
    };

    croak 'postgres is already running' if $self->pg_running;

    %{ $pg->{settings} } = (%{ $pg->{settings} }, %{ $opts{settings} || {} });

    $self->_initdb unless -e "$pg->{data}/PG_VERSION";
    $self->_write_pg_settings;

    # pg_ctl -w polls every 100 ms; we read postmaster.pid ourselves.
    my $mark = -s $pg->{log} // 0;
    my $r = $self->run_command(
        [ _as_postgres(_pg_bin('pg_ctl'), 'start', '-W', '-s',
                       '-D', $pg->{data}, '-l', $pg->{log}) ],
        cwd => $pg->{dir});
    die "pg_ctl start failed ($r->{status}): $r->{stdout}$r->{stderr}\n"
        if $r->{status};

    $self->wait_for(sub { $self->_pg_ready($mark) }, timeout => 30,
                    what => 'postgres to accept connections',
                    diag => sub { _tail($pg->{log}, 20) });

    if ($pg->{db} ne $PG_DB && !$pg->{created}) {
        $self->psql(qq{CREATE DATABASE "$pg->{db}"}, dbname => 'postgres');
    }
    $pg->{created} = 1;

    return $self->pg_conninfo;
}

# Ready as pg_ctl -w sees it: line 8 of postmaster.pid says "ready".
sub _pg_ready {
    my ($self, $mark) = @_;
    my $pg = $self->{pg};

    my @lines = split /\n/, _slurp("$pg->{data}/postmaster.pid") // '';
    return 1 if @lines >= 8 && $lines[7] =~ /^ready/ && _alive($lines[0]);

    my $log = substr _slurp($pg->{log}) // '', $mark;
    # the server's own FATAL or PANIC; a client's ("user@db FATAL: the
    # database system is starting up", from nginx reconnecting) is not one
    die "postgres failed to start:\n" . _tail($pg->{log}, 20) . "\n"
        if $log =~ /\[\d+\] (?:FATAL|PANIC):/;
    return 0;
}

# The data directory is a copy of a cached template: initdb plus the test
# database, made in single-user mode so that no port is needed.
sub _initdb {
    my ($self) = @_;
    my $pg = $self->{pg};

    make_path("$pg->{dir}/sock");
    if ($IS_ROOT) {
        my (undef, undef, $uid, $gid) = getpwnam 'postgres'
            or die "no postgres user on this machine\n";
        chown $uid, $gid, $pg->{dir}, "$pg->{dir}/sock";
        my $r = $self->run_command([ _as_postgres('test', '-w', $pg->{dir}) ]);
        die "the postgres user cannot write $pg->{dir}: is every parent of"
            . " TMPDIR ($TMPBASE) searchable by others?\n" if $r->{status};
    }

    # 1 MB WAL segments instead of 16: less to copy.
    my @initdb = (_pg_bin('initdb'), '-A', 'trust', '-U', $pg->{user},
                  '-E', 'UTF8', '--locale=C', '--no-sync', '--no-instructions',
                  '--wal-segsize=1');
    my $version = $self->run_command([ _pg_bin('postgres'), '--version' ]);
    my $name = 'pgdata-' . substr sha256_hex("$version->{stdout} @initdb"
                                             . " $PG_DB"), 0, 16;

    $self->_from_cache($name, $pg->{data}, sub {
        my ($data) = @_;
        mkdir $data, 0700 or die "mkdir $data: $!\n";
        chown +(getpwnam 'postgres')[2, 3], $data if $IS_ROOT;

        my $r = $self->run_command([ _as_postgres(@initdb, '-D', $data) ],
                                   cwd => '/');
        die "initdb failed ($r->{status}): $r->{stdout}$r->{stderr}\n"
            if $r->{status};

        $r = $self->run_command(
            [ _as_postgres(_pg_bin('postgres'), '--single', '-D', $data,
                           '-c', 'fsync=off', 'postgres') ],
            stdin => qq{CREATE DATABASE "$PG_DB"\n}, cwd => '/');
        die "CREATE DATABASE failed ($r->{status}): $r->{stderr}\n"
            if $r->{status} || $r->{stderr} =~ /ERROR/;
    });

    open my $fh, '>>', "$pg->{data}/postgresql.conf"
        or die "postgresql.conf: $!\n";
    print $fh "\ninclude 'mdm_test.conf'\n";
    close $fh;
}

# Settings for a throw-away cluster: fast rather than durable.  Rewritten at
# each start so that a restart can change them.
sub _write_pg_settings {
    my ($self) = @_;
    my $pg = $self->{pg};

    my %settings = (
        listen_addresses        => '127.0.0.1',
        port                    => $self->port('pg'),
        unix_socket_directories => "$pg->{dir}/sock",
        fsync                   => 'off',
        synchronous_commit      => 'off',
        full_page_writes        => 'off',
        shared_buffers          => '32MB',
        timezone                => 'UTC',
        log_timezone            => 'UTC',
        log_line_prefix         => '%m [%p] %q%u@%d ',
        %{ $pg->{settings} },
    );

    my $conf = join '', map {
        my $v = $settings{$_};
        $v =~ s/'/''/g;
        "$_ = '$v'\n";
    } sort keys %settings;

    my $path = $self->write_file("$pg->{data}/mdm_test.conf", $conf);
    chown +(getpwnam 'postgres')[2, 3], $path if $IS_ROOT;
}

# pg_ctl stop only sends a signal and polls every 100 ms: do it ourselves.
sub stop_postgres {
    my ($self, %opts) = @_;
    my $pid = $self->pg_pid or return;
    my $mode = $opts{mode} // 'fast';
    my $signal = $PG_STOP_SIGNAL{$mode} or croak "unknown stop mode $mode";
    $self->_terminate($pid, $signal, $opts{timeout} // 30);
}

sub _cleanup_postgres {
    my ($self) = @_;
    $self->stop_postgres(mode => 'immediate', timeout => 5);
}

sub pg_pid {
    my ($self) = @_;
    my $pg = $self->{pg} or return;
    my $pid = _read_pid("$pg->{data}/postmaster.pid");
    return _alive($pid) ? $pid : undef;
}

sub pg_running { $_[0]->pg_pid ? 1 : 0 }

sub pg_log {
    my ($self) = @_;
    return _slurp("$self->{dir}/pg/postgres.log") // '';
}

sub pg_conninfo {
    my ($self, %opts) = @_;
    my $pg = $self->{pg} // {};
    return sprintf 'host=127.0.0.1 port=%d dbname=%s user=%s',
                   $self->port('pg'), $opts{dbname} // $pg->{db} // $PG_DB,
                   $pg->{user} // 'postgres';
}

sub psql {
    my ($self, $sql, %opts) = @_;

    my $r = $self->run_command(
        [ _pg_bin('psql'), '-X', '-q', '-A', '-t', '-v', 'ON_ERROR_STOP=1',
          '-d', $self->pg_conninfo(%opts), '-f', '-' ],
        stdin => $sql, timeout => $opts{timeout} // 60);
    die "psql failed ($r->{status}): $r->{stderr}SQL: $sql\n"
        if $r->{status};

    chomp(my $out = $r->{stdout});
    return $out;
}

sub psql_rows {
    my ($self, @args) = @_;
    return split /\n/, $self->psql(@args);
}

###########################################################################
# Redis: one per test file on a unix socket, no persistence.

sub redis_socket { "$_[0]{dir}/redis.sock" }

sub start_redis {
    my ($self, %opts) = @_;

    croak 'redis is already running' if $self->redis_pid;

    my $sock = $self->redis_socket;
    die "redis socket path too long (set a shorter TMPDIR): $sock\n"
        if length $sock > 100;

    my %settings = (
        port          => 0,
        unixsocket    => $sock,
        unixsocketperm => 700,
        daemonize     => 'yes',
        pidfile       => "$self->{dir}/redis.pid",
        logfile       => "$self->{dir}/redis.log",
        dir           => $self->{dir},
        save          => '""',
        appendonly    => 'no',
        %{ $opts{settings} || {} },
    );
    my $conf = join '', map { "$_ $settings{$_}\n" } sort keys %settings;
    $self->write_file('redis.conf', $conf);

    my $r = $self->run_command([ $REDIS_SERVER, "$self->{dir}/redis.conf" ]);
    die "redis-server failed ($r->{status}): $r->{stdout}$r->{stderr}\n"
        . _tail("$self->{dir}/redis.log", 20) . "\n"
        if $r->{status};

    $self->wait_for(sub { _redis_ping($sock) }, timeout => 10,
                    what => 'redis to answer PING',
                    diag => sub { _tail("$self->{dir}/redis.log", 20) });
    return $sock;
}

sub _redis_ping {
    my ($sock) = @_;
    my $s = IO::Socket::UNIX->new(Peer => $sock) or return 0;
    print $s "PING\r\n";
    my $reply = <$s> // '';
    return $reply =~ /^\+PONG/;
}

sub redis_pid {
    my ($self) = @_;
    my $pid = _read_pid("$self->{dir}/redis.pid");
    return _alive($pid) ? $pid : undef;
}

sub stop_redis {
    my ($self) = @_;
    my $pid = $self->redis_pid or return;
    $self->_terminate($pid, 'TERM', 10);
    unlink "$self->{dir}/redis.pid";
}

sub redis_cli {
    my ($self, @args) = @_;
    my $r = $self->run_command([ $REDIS_CLI, '-s', $self->redis_socket,
                                 @args ]);
    die "redis-cli @args failed ($r->{status}): $r->{stderr}\n"
        if $r->{status};
    chomp(my $out = $r->{stdout});
    return $out;
}

###########################################################################
# nginx configuration

sub subst {
    my ($self, $text) = @_;
    $text =~ s/%%(\w+)%%/$self->_placeholder($1)/ge;
    return $text;
}

sub _placeholder {
    my ($self, $name) = @_;
    return $self->port($1)             if $name =~ /^PORT_(\w+)$/;
    return $self->{dir}                if $name eq 'TESTDIR';
    return $self->pg_conninfo          if $name eq 'PG';
    return 'unix:' . $self->redis_socket if $name eq 'REDIS';
    return $VECTORS                    if $name eq 'VECTORS';
    return $REPO                       if $name eq 'REPO';
    croak "unknown placeholder %%$name%%";
}

sub write_conf {
    my ($self, $http, %opts) = @_;

    my $dir = $self->{dir};
    my $workers = $opts{worker_processes} // 1;
    my $level = $opts{log_level} // $ENV{MDM_LOG_LEVEL} // 'info';
    my $events = $opts{events} // 'worker_connections 1024;';

    my $conf = "# written by MDM::Test for $self->{name}\n\n";
    $conf .= "load_module $MODULE;\n\n" unless $self->{no_module};
    $conf .= "user root root;\n" if $IS_ROOT;
    $conf .= <<"EOF";
worker_processes $workers;
master_process on;
daemon on;
pid $dir/nginx.pid;
error_log $dir/error.log $level;

events {
    $events
}

EOF
    $conf .= "$opts{main}\n\n" if defined $opts{main};

    if (defined $http) {
        $conf .= <<"EOF";
http {
    access_log off;
    client_body_temp_path $dir/client_body_temp;
    proxy_temp_path $dir/proxy_temp;
    fastcgi_temp_path $dir/fastcgi_temp;
    uwsgi_temp_path $dir/uwsgi_temp;
    scgi_temp_path $dir/scgi_temp;

$http
}
EOF
    }

    $conf = $self->subst($conf);
    $self->write_file('nginx.conf', $conf);
    $self->{workers} = $workers =~ /^\d+$/ ? $workers : undef;
    $self->{conf} = $conf;
    return "$dir/nginx.conf";
}

# Every address the configuration listens on, as [host, port] or [unix].
sub _listens {
    my ($conf) = @_;
    $conf =~ s/#[^\n]*//g;
    my @listens;
    while ($conf =~ /(?:^|[\s;{}])listen\s+([^;]+);/g) {
        my ($addr, @flags) = split ' ', $1;
        next if grep { $_ eq 'udp' || $_ eq 'quic' } @flags;
        if ($addr =~ /^unix:(.+)$/) {
            push @listens, [ unix => $1 ];
        } elsif ($addr =~ /^(?:\[([^\]]+)\]|([^:]+)):(\d+)$/) {
            my $host = $1 // $2;
            $host = '127.0.0.1' if $host eq '*' || $host eq '0.0.0.0';
            $host = '::1' if $host eq '::';
            push @listens, [ $host, $3 ];
        } elsif ($addr =~ /^\d+$/) {
            push @listens, [ '127.0.0.1', $addr ];
        }
    }
    return @listens;
}

sub _accepts {
    my ($listen) = @_;
    my $s = $listen->[0] eq 'unix'
        ? IO::Socket::UNIX->new(Peer => $listen->[1])
        : IO::Socket::IP->new(PeerHost => $listen->[0],
                              PeerPort => $listen->[1], Timeout => 1);
    return 0 unless $s;
    close $s;
    return 1;
}

###########################################################################
# nginx processes

sub _nginx_argv {
    my ($self, @args) = @_;
    my $dir = $self->{dir};
    return [ $NGINX, '-p', "$dir/", '-c', "$dir/nginx.conf",
             '-e', "$dir/error.log", @args ];
}

sub _nginx_env {
    return $NGINX_PRELOAD ? (env => { LD_PRELOAD => $NGINX_PRELOAD }) : ();
}

sub nginx_test {
    my ($self) = @_;
    my $r = $self->run_command($self->_nginx_argv('-t'), _nginx_env);
    return ($r->{status}, $r->{stdout} . $r->{stderr});
}

sub run {
    my ($self) = @_;

    croak 'write_conf() before run()' unless $self->{conf};
    croak 'nginx is already running' if $self->master_pid;
    unlink "$self->{dir}/nginx.pid";
    my $mark = $self->log_mark;

    my $r = $self->run_command($self->_nginx_argv, _nginx_env);
    die "nginx failed to start (exit $r->{status}):\n"
        . ($r->{stderr} || $self->log_tail(20, from => $mark)) . "\n"
        if $r->{status};

    $self->wait_for(sub {
        my $master = _read_pid("$self->{dir}/nginx.pid");
        return 1 if _alive($master);
        die "nginx exited during start:\n"
            . $self->log_tail(20, from => $mark) . "\n"
            if $master;
        return 0;
    }, timeout => 10, what => 'nginx pid file',
       diag => sub { $self->log_tail(20, from => $mark) });

    $self->_wait_ready(sub { 1 });
    return $self;
}

# Ready: every listen address accepts and the configured number of workers
# (those that $is_new accepts) has finished initialising, which is when a
# worker takes the title "worker process".
sub _wait_ready {
    my ($self, $is_new) = @_;

    my @listens = _listens($self->{conf});
    $self->wait_for(sub {
        my $master = $self->master_pid
            or die "nginx master exited:\n" . $self->log_tail . "\n";
        my @workers = grep { $is_new->($_) }
                      $self->pids_by_title(qr/^nginx: worker process$/);
        return 0 if defined $self->{workers} && @workers < $self->{workers};
        return !grep { !_accepts($_) } @listens;
    }, timeout => 10, what => 'nginx to listen on '
        . join(', ', map { join ':', @$_ } @listens),
       diag => sub { $self->log_tail });
}

sub master_pid {
    my ($self) = @_;
    my $pid = _read_pid("$self->{dir}/nginx.pid");
    return _alive($pid) ? $pid : undef;
}

sub pids_by_title {
    my ($self, $re) = @_;
    my $master = $self->master_pid or return;
    return grep { _title($_) =~ $re } _children($master);
}

sub worker_pids {
    my ($self) = @_;
    return $self->pids_by_title(qr/^nginx: worker process/);
}

sub reload {
    my ($self, %opts) = @_;

    my $master = $self->master_pid or croak 'nginx is not running';
    my %old = map { $_ => 1 } $self->worker_pids;
    my $mark = $self->log_mark;

    kill 'HUP', $master or die "kill HUP $master: $!\n";

    my $failed;
    $self->wait_for(sub {
        my $log = $self->error_log(from => $mark);
        if ($log =~ /^.*\[emerg\].*$/m) {
            $failed = $&;
            return 1;
        }
        return !grep { $old{$_} } $self->worker_pids;
    }, timeout => $opts{timeout} // 10, what => 'old nginx workers to exit',
       diag => sub { $self->log_tail });

    if ($failed) {
        return 0 if $opts{allow_fail};
        die "nginx rejected the new configuration: $failed\n";
    }

    $self->_wait_ready(sub { !$old{ $_[0] } });
    return 1;
}

sub stop {
    my ($self, %opts) = @_;
    my $master = $self->master_pid or return;
    $self->_terminate($master, $opts{signal} // 'QUIT', $opts{timeout} // 10);
}

sub _cleanup_nginx {
    my ($self) = @_;
    my $master = $self->master_pid or return;
    my @kids = _children($master);
    eval { $self->stop; 1 } or do {
        kill 'KILL', grep { _alive($_) } @kids;
        die $@;
    };
}

###########################################################################
# Logs

sub error_log {
    my ($self, %opts) = @_;
    my $log = _slurp("$self->{dir}/error.log") // '';
    return substr $log, $opts{from} // 0;
}

sub log_mark {
    my ($self) = @_;
    return -s "$self->{dir}/error.log" // 0;
}

sub log_tail {
    my ($self, $lines, %opts) = @_;
    my @all = split /\n/, $self->error_log(%opts);
    $lines //= 20;
    splice @all, 0, -$lines if @all > $lines;
    return join "\n", @all;
}

sub wait_for_log {
    my ($self, $re, $timeout, %opts) = @_;
    my $line;
    $self->wait_for(sub {
        my $log = $self->error_log(from => $opts{from});
        return 0 unless $log =~ $re;
        my $start = rindex($log, "\n", $-[0]) + 1;
        my $end = index($log, "\n", $-[0]);
        $line = substr $log, $start, ($end < 0 ? length $log : $end) - $start;
        return 1;
    }, timeout => $timeout // 10, what => "error.log to match $re",
       diag => sub { $self->log_tail });
    return $line;
}

sub log_alerts {
    my ($self, %opts) = @_;
    return grep { /\[(?:alert|crit|emerg)\]/ }
           split /\n/, $self->error_log(%opts);
}

###########################################################################
# HTTP through curl, so that keep-alive, TLS, client certificates and HTTP/2
# behave exactly as they do for real clients.  One curl process runs a whole
# batch of requests from a config file: in sequence (reusing connections) or
# in parallel.

sub http {
    my ($self, $method, $url, %opts) = @_;
    my $batch = $self->http_batch([ [ $method, $url, %opts ] ]);
    return $batch->{results}[0];
}

sub http_parallel {
    my ($self, $n, $method, $url, %opts) = @_;
    my $max = delete $opts{parallel} // $n;
    return $self->http_batch([ map { [ $method, $url, %opts ] } 1 .. $n ],
                             parallel => $max);
}

sub http_batch {
    my ($self, $requests, %opts) = @_;

    my $base = sprintf '%s/tmp/http-%d-%d', $self->{dir}, $$, ++$self->{seq};
    my $config = "silent\n";
    $config .= "parallel\nparallel-immediate\nparallel-max = $opts{parallel}\n"
        if $opts{parallel};

    my $max_time = 0;
    for my $i (0 .. $#$requests) {
        my ($method, $url, %ro) = @{ $requests->[$i] };
        $config .= "next\n" if $i;
        $config .= $self->_curl_request("$base-$i", $i, $method, $url, %ro);
        my $t = $ro{timeout} // 10;
        $max_time = $t if $t > $max_time;
    }
    $self->write_file("$base.curlrc", $config);

    my $budget = $opts{parallel} ? $max_time
                                 : $max_time * @$requests;
    my $start = time;
    my $r = $self->run_command([ $CURL, '-K', "$base.curlrc" ],
                               timeout => $budget + 10);
    my $wall = time - $start;

    my %info;
    for my $line (split /\n/, $r->{stdout}) {
        $info{$1} = JSON::PP->new->decode($2)
            if $line =~ /^MDM-CURL (\d+) (\{.*\})\s*$/;
    }

    my (@results, %statuses);
    for my $i (0 .. $#$requests) {
        my $res = $self->_curl_result("$base-$i", $requests->[$i][0],
                                      $info{$i}, $r);
        $statuses{ $res->{status} }++;
        push @results, $res;
    }
    unlink "$base.curlrc", glob "$base-*";

    return { results => \@results, statuses => \%statuses, wall => $wall };
}

sub _curl_quote {
    my ($s) = @_;
    $s =~ s/([\\"])/\\$1/g;
    $s =~ s/\n/\\n/g;
    $s =~ s/\r/\\r/g;
    return qq{"$s"};
}

sub _curl_request {
    my ($self, $base, $i, $method, $url, %o) = @_;

    my @headers = ref $o{headers} eq 'HASH'
        ? map { ($_, $o{headers}{$_}) } sort keys %{ $o{headers} }
        : @{ $o{headers} || [] };
    my %named;
    for (my $h = 0; $h < @headers; $h += 2) {
        $named{ lc $headers[$h] } = 1;
    }

    my $https = $o{https} || $o{cert} || ($url =~ m{^https://});
    my $host = $o{host} // '127.0.0.1';
    my @opts;

    if ($url =~ m{^/}) {
        my $port = $self->port($o{port} // 0);
        $url = ($https ? 'https' : 'http') . "://$host:$port$url";
        push @opts, resolve => "$host:$port:127.0.0.1"
            if $host ne '127.0.0.1';
    }

    push @opts, url => $url,
                output => "$base.body",
                'dump-header' => "$base.hdr",
                'write-out' => "MDM-CURL $i %{json}\n",
                'max-time' => ($o{timeout} // 10) * $TIMEOUT_SCALE;

    if (uc $method eq 'HEAD') {
        push @opts, head => undef;
    } elsif (uc $method ne 'GET' || defined $o{body}) {
        push @opts, request => uc $method;
    }

    if (defined $o{body} || defined $o{body_file}) {
        my $file = $o{body_file} // $self->write_file("$base.req", $o{body});
        push @opts, 'data-binary' => "\@$file";
        # No invented Content-Type: devices send their own or none.
        push @opts, header => 'Content-Type:' unless $named{'content-type'};
    }
    push @opts, header => 'Expect:' unless $named{expect};
    for (my $h = 0; $h < @headers; $h += 2) {
        push @opts, header => "$headers[$h]: $headers[$h + 1]";
    }

    push @opts, cert => $o{cert} if $o{cert};
    push @opts, key => $o{key} if $o{key};
    if ($o{insecure}) {
        push @opts, insecure => undef;
    } elsif (my $ca = $o{cacert}
                      // ($self->{tls_server} && $self->{tls_server}{ca}{cert}))
    {
        push @opts, cacert => $ca;
    }

    my %versions = ('1.0' => 'http1.0', '1.1' => 'http1.1', '2' => 'http2',
                    '2-prior' => 'http2-prior-knowledge');
    if (defined $o{http_version}) {
        my $v = $versions{ $o{http_version} }
            or croak "unknown http_version $o{http_version}";
        push @opts, $v => undef;
    }
    push @opts, map { ($_ => undef) } @{ $o{curl_flags} || [] };

    my $text = '';
    while (my ($k, $v) = splice @opts, 0, 2) {
        $text .= defined $v ? "$k = " . _curl_quote($v) . "\n" : "$k\n";
    }
    return $text;
}

sub _curl_result {
    my ($self, $base, $method, $info, $run) = @_;

    my %res = (status => 0, headers => {}, body => '', time => undef);
    if (!$info) {
        $res{error} = "curl gave no result ($run->{status}): $run->{stderr}";
        return \%res;
    }

    $res{status}       = $info->{http_code} // 0;
    $res{time}         = $info->{time_total};
    $res{http_version} = $info->{http_version};
    $res{num_connects} = $info->{num_connects};
    $res{local_port}   = $info->{local_port};
    $res{exitcode}     = $info->{exitcode};
    $res{error}        = $info->{errormsg} if $info->{exitcode};

    # The header file holds one block per response: keep the final one.
    my @blocks = grep { /^HTTP\// }
                 split /\r?\n\r?\n/, _slurp("$base.hdr") // '';
    @blocks = grep { !m{^HTTP/\S+ 1\d\d} } @blocks;
    if (@blocks) {
        my ($status_line, @lines) = split /\r?\n/, $blocks[-1];
        ($res{status_line} = $status_line) =~ s/\s+\z//;
        for my $line (@lines) {
            my ($name, $value) = $line =~ /^([^:]+):\s*(.*?)\s*$/ or next;
            my $h = \$res{headers}{ lc $name };
            $$h = defined $$h ? "$$h, $value" : $value;
        }
    }

    $res{body} = uc $method eq 'HEAD' ? '' : _slurp("$base.body") // '';
    return \%res;
}

###########################################################################
# Certificates with the openssl command line.  A CA is a directory with a
# minimal `openssl ca` configuration, so that leaf certificates can carry any
# validity period, including one wholly in the past.

sub _openssl {
    my ($self, @args) = @_;
    my $r = $self->run_command([ $OPENSSL, @args ]);
    die "openssl @args failed ($r->{status}): $r->{stderr}\n"
        if $r->{status};
    return $r->{stdout};
}

# The n-th key of a kind in a test is the n-th cached key of that kind:
# distinct within a test, shared between tests (unless fresh => 1).
sub _new_key {
    my ($self, $spec, $path, $fresh) = @_;
    my $n = ++$self->{keys}{$spec};
    (my $name = "key-$spec-$n") =~ s/\W+/_/g;
    return $fresh ? $self->_genpkey($spec, $path)
                  : $self->_from_cache($name, $path,
                                       sub { $self->_genpkey($spec, $_[0]) });
}

sub _genpkey {
    my ($self, $spec, $path) = @_;
    my @alg;
    if ($spec =~ /^rsa:(\d+)$/) {
        @alg = ('-algorithm', 'RSA', '-pkeyopt', "rsa_keygen_bits:$1");
    } elsif ($spec =~ /^ec:(.+)$/) {
        @alg = ('-algorithm', 'EC', '-pkeyopt', "ec_paramgen_curve:$1");
    } elsif ($spec =~ /^(ed25519|ed448)$/i) {
        @alg = ('-algorithm', uc $1);
    } else {
        croak "unknown key type $spec (rsa:BITS, ec:CURVE or ed25519)";
    }
    $self->_openssl('genpkey', @alg, '-out', $path);
    chmod 0600, $path;
    return $path;
}

sub _pki_name {
    my ($self, $name) = @_;
    $name =~ s/[^\w.-]+/_/g;
    my $base = "$self->{dir}/pki/$name";
    my $n = 1;
    $base = "$self->{dir}/pki/$name-" . ++$n while -e "$base.crt";
    make_path(dirname($base));
    return $base;
}

# Dates: epoch seconds, an offset from now like '-2d', '+12h', '-30m', or
# an ASN.1 time string (YYMMDDHHMMSSZ / YYYYMMDDHHMMSSZ) used as is.
sub _asn1_time {
    my ($when) = @_;
    return $when if $when =~ /^\d{12}(?:\d\d)?Z$/;
    my $epoch = $when;
    if ($when =~ /^([+-]\d+)([smhd])$/) {
        my %unit = (s => 1, m => 60, h => 3600, d => 86400);
        $epoch = time + $1 * $unit{$2};
    }
    croak "bad certificate date '$when'" unless $epoch =~ /^\d+(?:\.\d+)?$/;
    my @tm = gmtime int $epoch;
    return strftime($tm[5] + 1900 < 2050 ? '%y%m%d%H%M%SZ' : '%Y%m%d%H%M%SZ',
                    @tm);
}

sub make_ca {
    my ($self, %opts) = @_;

    my $name = $opts{name} // 'ca';
    my $base = $self->_pki_name($name);
    my $key = $self->_new_key($opts{key} // 'rsa:2048', "$base.key",
                              $opts{fresh_key});
    my $cadir = "$base.ca";
    make_path("$cadir/newcerts");
    $self->write_file("$cadir/index.txt", '');
    $self->write_file("$cadir/serial", "01\n");
    $self->write_file("$cadir/index.txt.attr", "unique_subject = no\n");

    $self->write_file("$cadir/openssl.cnf", <<"EOF");
[ req ]
distinguished_name = req_dn
[ req_dn ]
[ ca ]
default_ca = this_ca
[ this_ca ]
database = $cadir/index.txt
new_certs_dir = $cadir/newcerts
serial = $cadir/serial
certificate = $base.crt
private_key = $key
default_md = sha256
policy = policy_any
unique_subject = no
preserve = yes
email_in_dn = no
copy_extensions = none
[ policy_any ]
countryName = optional
stateOrProvinceName = optional
localityName = optional
organizationName = optional
organizationalUnitName = optional
commonName = optional
emailAddress = optional
serialNumber = optional
domainComponent = optional
userId = optional
[ v3_ca ]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign, digitalSignature
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
EOF

    my $ca = { name => $name, cert => "$base.crt", key => $key,
               dir => $cadir, config => "$cadir/openssl.cnf" };
    my $subject = $opts{subject} // '/CN=' . ($opts{cn} // $name);

    if ($opts{ca}) {
        # An intermediate: signed by its parent like any certificate.
        $self->_openssl('req', '-new', '-config', $ca->{config},
                        '-key', $key, '-subj', $subject,
                        '-out', "$base.csr");
        $self->_sign($opts{ca}, "$base.csr", "$base.crt",
                     "[ ext ]\nbasicConstraints = critical, CA:TRUE\n"
                     . "keyUsage = critical, keyCertSign, cRLSign,"
                     . " digitalSignature\n"
                     . "subjectKeyIdentifier = hash\n"
                     . "authorityKeyIdentifier = keyid:always\n",
                     %opts, days => $opts{days} // 3650);
        $ca->{chain} = [ "$base.crt", @{ $opts{ca}{chain}
                                         || [ $opts{ca}{cert} ] } ];
    } else {
        $self->_openssl('req', '-new', '-x509', '-config', $ca->{config},
                        '-extensions', 'v3_ca', '-key', $key,
                        '-subj', $subject, '-sha256',
                        '-days', $opts{days} // 3650, '-out', "$base.crt");
        $ca->{chain} = [ "$base.crt" ];
    }

    return $ca;
}

sub make_cert {
    my ($self, %opts) = @_;

    my $ca = $opts{ca} or croak 'make_cert needs ca => make_ca(...)';
    my $cn = $opts{cn} // 'localhost';
    my $base = $self->_pki_name($opts{name} // $cn);
    my $keyspec = $opts{key} // 'rsa:2048';
    my $key = $self->_new_key($keyspec, "$base.key", $opts{fresh_key});

    $self->_openssl('req', '-new', '-config', $ca->{config}, '-key', $key,
                    '-subj', $opts{subject} // "/CN=$cn",
                    '-out', "$base.csr");

    my %eku = (clientAuth => 'clientAuth', serverAuth => 'serverAuth',
               both => 'serverAuth, clientAuth');
    my $usage = $keyspec =~ /^rsa/ ? 'digitalSignature, keyEncipherment'
                                   : 'digitalSignature';
    my $ext = "[ ext ]\nbasicConstraints = critical, CA:FALSE\n"
            . "keyUsage = critical, $usage\n"
            . "subjectKeyIdentifier = hash\n"
            . "authorityKeyIdentifier = keyid\n";
    if (my $e = $opts{ext}) {
        $ext .= 'extendedKeyUsage = ' . ($eku{$e} // $e) . "\n";
    }
    $ext .= "subjectAltName = $opts{san}\n" if $opts{san};
    $ext .= "$opts{extra_ext}\n" if $opts{extra_ext};

    $self->_sign($ca, "$base.csr", "$base.crt", $ext, %opts);

    return { name => $cn, cert => "$base.crt", key => $key,
             csr => "$base.csr", ca => $ca };
}

sub _sign {
    my ($self, $ca, $csr, $crt, $ext, %opts) = @_;

    my $not_before = _asn1_time($opts{not_before} // '-1h');
    my $not_after = _asn1_time($opts{not_after}
                               // '+' . ($opts{days} // 365) . 'd');
    my $extfile = $self->write_file("$crt.ext", $ext);

    $self->_openssl('ca', '-batch', '-config', $ca->{config}, '-notext',
                    '-rand_serial', '-in', $csr, '-out', $crt,
                    '-startdate', $not_before, '-enddate', $not_after,
                    '-extfile', $extfile, '-extensions', 'ext');
}

sub tls_server_cert {
    my ($self) = @_;
    return $self->{tls_server} //= do {
        my $ca = $self->make_ca(name => 'test-ca');
        $self->make_cert(ca => $ca, cn => 'localhost',
                         san => 'DNS:localhost, IP:127.0.0.1',
                         ext => 'serverAuth');
    };
}

# The http block of a check-in test: the PostgreSQL, Redis and helper
# lines, then $o{http}, then a mutual-TLS server on %%PORT_0%% whose
# devices $o{ca} vouches for, holding $o{server} (default: the ServerURL
# location alone); $o{after} follows the server.
sub checkin_conf {
    my ($self, %o) = @_;
    my $srv = $self->tls_server_cert;
    my $http = $o{http} // '';
    my $server = $o{server}
        // "        location = /mdm/apple/mdm { mdm_checkin; }\n";
    my $after = $o{after} // '';

    return <<"EOF";
    mdm_postgres "%%PG%% sslmode=disable";
    mdm_redis %%REDIS%%;
    mdm_helper_path %%TESTDIR%%/helper;
$http
    server {
        listen 127.0.0.1:%%PORT_0%% ssl;
        server_name localhost;

        ssl_certificate $srv->{cert};
        ssl_certificate_key $srv->{key};
        ssl_verify_client optional_no_ca;

        mdm_checkin_ca $o{ca}{cert};

$server    }
$after
EOF
}

sub cert_der {
    my ($self, $path) = @_;
    my $pem = _slurp($path) // die "cannot read $path\n";
    $pem =~ /-----BEGIN CERTIFICATE-----(.+?)-----END CERTIFICATE-----/s
        or die "no certificate in $path\n";
    return decode_base64($1);
}

sub cert_sha256 {
    my ($self, $path) = @_;
    return sha256_hex($self->cert_der($path));
}

###########################################################################
# Skipping

sub has_module { -f $MODULE }

sub plan_skip_unless_module {
    my ($self) = @_;
    Test::More::plan(skip_all => "module not built: $MODULE (run make build)")
        unless -f $MODULE;
    return $self;
}

1;

__END__

=head1 NAME

MDM::Test - harness for nginx-mdm integration tests

=head1 SYNOPSIS

    use FindBin;
    use lib "$FindBin::Bin/lib";
    use Test::More;
    use MDM::Test;

    my $t = MDM::Test->new(name => 'checkin')->plan_skip_unless_module;

    $t->start_postgres;
    $t->start_redis;
    $t->write_conf(<<'EOF');
        mdm_postgres "%%PG%%";
        mdm_redis %%REDIS%%;
        server {
            listen 127.0.0.1:%%PORT_0%%;
            location /mdm/checkin { mdm_checkin; }
        }
    EOF
    $t->run;

    my $r = $t->http(PUT => '/mdm/checkin', body => $plist,
                     headers => { 'Content-Type' =>
                                  'application/x-apple-aspen-mdm-checkin' });
    is($r->{status}, 200, 'check-in accepted');

    done_testing;

=head1 DESCRIPTION

Each test file makes one C<MDM::Test> object.  It owns a directory under
C<$TMPDIR> (or F</tmp>) and, on demand, a PostgreSQL cluster, a Redis
server on a unix socket and an nginx with C<master_process on>.  At exit
(also when the test dies or gets SIGINT/SIGTERM) all of them are stopped and
the directory is removed.

Nothing sleeps blindly: every wait polls a condition (every 5 to 25 ms) with
a deadline and dies with a message that says what it was waiting for.

Methods die on failure unless documented otherwise, so a test does not need
to check their results.

=head1 ENVIRONMENT

=over

=item TEST_KEEP=1

Keep the test directory (processes are still stopped) and print its path.

=item MDM_MODULE

The module to load; default F<build/ngx_mdm_module.so> in the repository.

=item MDM_NGINX

The nginx binary; default F</usr/sbin/nginx>.

=item MDM_NGINX_PRELOAD

A library to LD_PRELOAD into nginx (C<make test-asan> sets it to libasan).

=item MDM_VECTORS

The shared test vectors; default F<../shared/vectors> beside the repository.

=item MDM_LOG_LEVEL

Default C<error_log> level (C<info>); C<debug> works with Debian's nginx.

=item MDM_TIMEOUT_SCALE

Multiplies every deadline (for slow machines or sanitizer builds).

=item MDM_NO_CACHE=1

Make the cluster template and keys anew instead of copying them from the
cache (see L</CACHE>).

=item MDM_PG_BINDIR, MDM_CURL, MDM_OPENSSL, MDM_REDIS_SERVER, MDM_REDIS_CLI

Override where the tools are.  The PostgreSQL binaries default to the newest
F</usr/lib/postgresql/*/bin>.

=back

=head1 CACHE

Two things are slow to make and need not differ between tests: an initdb'd
cluster (with the database C<mdm_test> already in it) and private keys (an
RSA key takes 0.1 to 0.7 s).  They are made once in
F<$TMPDIR/mdm-test-cache-UID/> and copied; the n-th key of a type in a test
is the n-th cached one, so keys are distinct within a test and the same
across tests (C<< fresh_key => 1 >> makes a new one).  Port locks live in
F<$TMPDIR/mdm-test-ports/>.  Both folders may be deleted at any time when
no test runs.

=head1 METHODS

=head2 Test directory and ports

=over

=item MDM::Test->new(name => $name, no_module => 1)

Makes the test directory (mode 0755, so that the postgres user can traverse
it).  C<name> defaults to the script's base name.  C<no_module> leaves the
C<load_module> line out of the nginx configuration.

=item $t->dir, $t->name

The test directory and the test's name.

=item $t->path($name)

C<$name> under the test directory (absolute paths are returned as they are).

=item $t->port($n)

A free TCP port on 127.0.0.1, picked on first use; the same C<$n> always
gives the same port.  C<$n> may be a number or a word (C<'pg'> is the
PostgreSQL port).  Ports are below Linux's ephemeral range and are locked
against other tests that run at the same time.

=item $t->cleanup

Stops nginx, spawned helpers, Redis and PostgreSQL and removes the
directory.  Runs by itself at exit; calling it earlier is allowed and it runs
only once.  When the test is failing it prints the tail of nginx's
F<error.log>.

=back

=head2 Files, commands, waiting

=over

=item $t->write_file($name, $content)

Writes bytes to a file under the test directory (making directories) and
returns its absolute path.

=item $t->read_file($name)

The file's bytes, or undef if it does not exist.

=item $t->run_command(\@argv, stdin => $bytes, cwd => $dir, env => {...}, timeout => $s)

Runs a command to completion and returns
C<< { status, signal, stdout, stderr } >>.  Dies if it outlives its timeout
(default 60 s).

=item $t->wait_for(sub { ... }, timeout => 10, what => 'description', diag => sub { ... })

Polls the code until it returns true, and returns that value.  On timeout
dies with "timed out after ...s waiting for I<what>", followed by what
C<diag> returns (e.g. a log tail).

=item $t->spawn(sub { ... } | \@argv, log => $name)

Runs a code reference in a forked child, or executes a command, in the
background, with output appended to a log file in the test directory.
Returns the pid.  Spawned processes are stopped at cleanup.  A child must not
use Test::More, and must not pick ports: call C<< $t->port(n) >> before
C<spawn> so that parent and child agree.

=item $t->stop_spawned($pid)

Sends TERM (then KILL after 5 s), reaps the child and returns its wait
status.

=back

=head2 PostgreSQL

=over

=item $t->start_postgres(settings => { max_connections => 20 }, db => $name)

On first call runs initdb (as the postgres user when we are root; trust
authentication, user C<postgres>, UTF8, C locale, C<--no-sync>, 1 MB WAL
segments) into F<pg/data>, with the database (default C<mdm_test>).  Starts
the server with C<pg_ctl> on 127.0.0.1:C<< $t->port('pg') >> and a socket
in F<pg/sock>, with fsync, synchronous_commit and full_page_writes off, and
waits until it accepts connections.
C<settings> are extra server settings; they are kept, and a later start may
add or change some.  Calling it again after C<stop_postgres> restarts the
same cluster on the same port.  Returns the connection string.

=item $t->stop_postgres(mode => 'fast', timeout => 30)

Stops the server as C<pg_ctl stop -m fast> (or C<smart>, C<immediate>)
would, by signalling the postmaster, and waits until it is gone.

=item $t->pg_running, $t->pg_pid

Whether the postmaster lives; its pid.

=item $t->pg_conninfo(dbname => $name)

C<host=127.0.0.1 port=... dbname=... user=postgres>, for libpq.  Usable as
C<%%PG%%> in the nginx configuration, also before PostgreSQL is started.

=item $t->psql($sql, dbname => $name)

Runs SQL (any number of statements) with C<psql -X -q -A -t -v
ON_ERROR_STOP=1> and returns the output rows as one string: rows separated
by newlines, columns by C<|>, no final newline (so
C<< is($t->psql('SELECT 1'), 1) >> works in list context too).  Dies with
psql's message on an error.

=item $t->psql_rows($sql, dbname => $name)

The same output as a list of rows.

=item $t->pg_log

The server's log.

=back

=head2 Redis

=over

=item $t->start_redis(settings => { ... })

Starts redis-server on the unix socket F<redis.sock> (no TCP port, no RDB,
no AOF) and waits until it answers PING.  Can be called again after
C<stop_redis>.

=item $t->stop_redis

Sends TERM and waits until the server is gone.

=item $t->redis_socket, $t->redis_pid

The socket path (C<%%REDIS%%> in the configuration is C<unix:> plus it);
the server's pid.

=item $t->redis_cli(@args)

Runs C<redis-cli -s socket @args>; returns its output without the final
newline (raw mode: C<PONG>, not C<"PONG">).

=back

=head2 nginx

=over

=item $t->checkin_conf(ca => $ca, http => ..., server => ..., after => ...)

The http block of a check-in test, for C<write_conf>: C<mdm_postgres>,
C<mdm_redis> and C<mdm_helper_path> for this test's services, the
directives in C<http>, then a mutual-TLS server on C<%%PORT_0%%>
(C<tls_server_cert>, C<ssl_verify_client optional_no_ca>, C<mdm_checkin_ca>
of C<ca>) holding C<server> (default: C<location = /mdm/apple/mdm {
mdm_checkin; }>), then C<after> (more servers).

=item $t->write_conf($http_block, %opts)

Writes F<nginx.conf>: C<load_module> (absolute, unless C<no_module>),
C<user root root> when we are root, C<worker_processes>, C<master_process
on>, C<daemon on>, C<pid> and C<error_log> in the test directory, an
C<events> block, the C<main> snippet, and an C<http> block with
C<access_log off>, every temp path in the test directory and
C<$http_block>.  Options: C<main> (top-level text), C<events> (replaces
C<worker_connections 1024;>), C<worker_processes> (default 1), C<log_level>
(default C<info>).  With C<$http_block> undef there is no http block.

Placeholders, in the whole file: C<%%PORT_n%%> (C<< $t->port(n) >>),
C<%%TESTDIR%%>, C<%%PG%%> (C<pg_conninfo>), C<%%REDIS%%>
(C<unix:/path/redis.sock>), C<%%VECTORS%%>, C<%%REPO%%>.  An unknown
placeholder dies.  Use a quoted heredoc (C<< <<'EOF' >>) so that nginx
variables stay as they are.

=item $t->subst($text)

Substitutes the placeholders in any text.

=item $t->nginx_test

Runs C<nginx -t>; returns C<($exit_status, $output)>.

=item $t->run

Starts nginx (always with C<-p dir/ -c dir/nginx.conf -e dir/error.log>)
and waits until the pid file names a live master, every C<listen> address
of the configuration accepts connections and the configured number of
workers has initialised.  Dies with the tail of the error log if nginx
exits or the deadline passes.  Returns C<$t>.

=item $t->reload(allow_fail => 1, timeout => 10)

Sends HUP to the master and waits until every old worker is gone and the
new ones are ready.  If nginx rejects the new configuration (an C<[emerg]>
in the log) it dies, or returns false with C<allow_fail>.  Returns true on
success.

=item $t->stop(signal => 'QUIT', timeout => 10)

Sends QUIT (graceful) or the given signal to the master and waits until it
is gone; escalates to KILL (and dies) if it outlives the timeout.

=item $t->master_pid

The master's pid, or undef if nginx is not running.

=item $t->worker_pids

The master's children titled C<nginx: worker process> (including those
"shutting down").

=item $t->pids_by_title(qr/.../)

The master's children whose title matches, e.g.
C<qr/mdm helper process/>.

=back

=head2 Logs

=over

=item $t->error_log(from => $mark)

nginx's error log (from byte C<$mark> on).

=item $t->log_mark

The log's current size, to look only at what comes after.

=item $t->log_tail($lines, from => $mark)

The last lines of the log (default 20), from byte C<$mark> on.

=item $t->wait_for_log(qr/.../, $timeout, from => $mark)

Waits until the log matches and returns the first matching line.

=item $t->log_alerts(from => $mark)

The log lines at level alert, crit or emerg, for
C<< is_deeply([$t->log_alerts], [], 'no alerts') >>.

=back

=head2 HTTP

=over

=item $t->http($method, $url_or_path, %opts)

One request with curl.  A path (C</x>) means
C<http://127.0.0.1:port/x> with the port C<< $t->port($opts{port} // 0) >>,
or https with C<https> or C<cert>.  Options:

    headers      => { Name => 'value' } or [ Name => 'value', ... ]
    body         => $bytes           (binary-safe, sent from a file)
    body_file    => $path
    cert, key    => client certificate and key (PEM paths)
    cacert       => CA file; default the tls_server_cert CA if made
    insecure     => 1                (no server verification)
    https        => 1                (for a path)
    host         => 'localhost'      (URL host for a path, resolved to
                                      127.0.0.1: sends SNI)
    http_version => '1.0' | '1.1' | '2' | '2-prior'
    timeout      => 10               (seconds)
    curl_flags   => [ 'compressed' ] (extra curl options without value)

No C<Content-Type> or C<Expect> is added unless given.  Returns

    { status       => 200,         # 0 if no response (see error)
      status_line  => 'HTTP/1.1 200 OK',
      headers      => { 'content-type' => '...' },  # lower-case names,
                                                     # repeats joined by ', '
      body         => $bytes,
      time         => 0.0012,       # curl's time_total, seconds
      http_version => '1.1',
      num_connects => 1,            # 0 when a connection was reused
      local_port   => 41234,
      error        => undef }       # curl's message on failure

=item $t->http_batch([ [ $method, $url, %opts ], ... ], parallel => $max)

Runs the requests in one curl: in sequence (reusing kept-alive
connections), or with C<parallel> at most C<$max> at a time.  Returns
C<< { results => [ ... ], statuses => { 200 => 20 }, wall => $seconds } >>,
results in request order.

=item $t->http_parallel($n, $method, $url, %opts)

C<$n> copies of one request, all at once (or C<< parallel => $max >> at a
time); returns what C<http_batch> returns.

=back

=head2 Certificates

=over

=item $t->make_ca(name => 'ca', key => 'rsa:2048' | 'ec:P-256' | 'ed25519', days => 3650, cn => $name, subject => '/O=.../CN=...', ca => $parent, fresh_key => 1)

Makes a CA under F<pki/>; with C<ca> an intermediate signed by C<$parent>.
Returns C<< { cert, key, name, chain => [ cert paths, this one first ] } >>.

=item $t->make_cert(ca => $ca, cn => 'localhost', san => 'DNS:localhost', ext => 'clientAuth' | 'serverAuth' | 'both', key => 'rsa:2048', days => 365, not_before => '-1h', not_after => ..., subject => ..., extra_ext => "...", name => ..., fresh_key => 1)

Makes a key and a certificate signed by C<$ca> (with C<openssl ca>, so any
validity works).  Dates are epoch seconds, offsets from now (C<-2d>,
C<+12h>, C<-30m>, C<-10s>) or ASN.1 times; C<< not_before => '-10d',
not_after => '-1d' >> makes an expired certificate.  C<extra_ext> adds
OpenSSL extension lines.  Returns C<< { cert, key, csr, name, ca } >>.

=item $t->tls_server_cert

A CA and a C<localhost> server certificate (SAN DNS:localhost and
IP:127.0.0.1), made once per test.  Returns C<< { cert, key, ca => $ca } >>.
Once made, C<http> trusts its CA by default.

=item $t->cert_der($pem_path), $t->cert_sha256($pem_path)

The certificate's DER bytes; their SHA-256 in hex.

=back

=head2 Skipping and paths

=over

=item $t->plan_skip_unless_module

C<plan skip_all> when the module has not been built.  Returns C<$t>.  Also
a class method.

=item $t->has_module, $t->module_path, $t->nginx_binary, $t->vectors_dir, $t->repo_dir

=back

=cut
