#!/usr/bin/perl

# The test harness itself, without our module: PostgreSQL, Redis, plain
# nginx with TLS and client certificates, reload, parallel requests, and
# the clean-up at the end.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use IO::Socket::IP;
use Test::More;
use MDM::Test;

my $t = MDM::Test->new(name => 'harness', no_module => 1);
my $dir = $t->dir;

ok(-d $dir, 'test directory exists');
is((stat $dir)[2] & 07777, 0755, 'test directory is 0755');
is($t->port(0), $t->port(0), 'same port for the same number');
isnt($t->port(0), $t->port(1), 'different ports for different numbers');

# PostgreSQL: start, query, restart with the data kept.

$t->start_postgres(settings => { max_connections => 20 });
ok($t->pg_running, 'postgres running');
is($t->psql('SELECT 1'), 1, 'psql SELECT 1');
is($t->psql('SHOW max_connections'), 20, 'extra server setting applied');
like($t->pg_conninfo,
     qr/^host=127\.0\.0\.1 port=${\ $t->port('pg')} dbname=mdm_test user=\w+$/,
     'conninfo');
$t->psql(<<'SQL');
CREATE TABLE kv (k text PRIMARY KEY, v text);
INSERT INTO kv VALUES ('a', 'x'), ('b', 'y|z');
SQL
is_deeply([ $t->psql_rows('SELECT k, v FROM kv ORDER BY k') ],
          [ 'a|x', 'b|y|z' ], 'psql_rows');
ok(!eval { $t->psql('SELECT * FROM no_such_table'); 1 }, 'psql dies on error');
like($@, qr/no_such_table/, 'with the error message');

$t->stop_postgres;
ok(!$t->pg_running, 'postgres stopped');
$t->start_postgres;
ok($t->pg_running, 'postgres restarted');
is($t->psql("SELECT v FROM kv WHERE k = 'a'"), 'x', 'data survived restart');

# Redis

$t->start_redis;
is($t->redis_cli('PING'), 'PONG', 'redis PING');
$t->redis_cli('SET', 'key', "va lue");
is($t->redis_cli('GET', 'key'), 'va lue', 'redis SET/GET');
is((stat $t->redis_socket)[2] & 0777, 0700, 'redis socket is private');

# Certificates

my $server = $t->tls_server_cert;
my $client = $t->make_cert(ca => $server->{ca}, cn => 'device-1',
                           ext => 'clientAuth', key => 'ec:P-256');
my $expired = $t->make_cert(ca => $server->{ca}, cn => 'expired',
                            ext => 'clientAuth',
                            not_before => '-10d', not_after => '-1d');
my $text = $t->run_command([ 'openssl', 'x509', '-noout', '-checkend', 0,
                             '-in', $expired->{cert} ]);
is($text->{status}, 1, 'expired certificate is expired');
$text = $t->run_command([ 'openssl', 'verify', '-CAfile', $server->{ca}{cert},
                          $client->{cert} ]);
is($text->{status}, 0, 'client certificate verifies against the CA')
    or diag $text->{stdout}, $text->{stderr};
like($t->cert_sha256($client->{cert}), qr/^[0-9a-f]{64}$/, 'cert_sha256');

# nginx: plain HTTP, HTTPS with optional client certificates, WebDAV PUT for
# binary bodies.

my $conf = <<'EOF';
    server {
        listen 127.0.0.1:%%PORT_0%%;

        location / {
            return 200 "hello";
        }

        location /dav/ {
            root %%TESTDIR%%;
            dav_methods PUT;
            create_full_put_path on;
        }

        location /version {
            return 200 "VERSION";
        }
    }

    server {
        listen 127.0.0.1:%%PORT_1%% ssl;

        ssl_certificate CERT;
        ssl_certificate_key KEY;
        ssl_verify_client optional_no_ca;

        location / {
            return 200 "dn=$ssl_client_s_dn";
        }
    }
EOF
$conf =~ s/CERT/$server->{cert}/;
$conf =~ s/KEY/$server->{key}/;

$t->write_conf('server { listen 127.0.0.1:%%PORT_0%%; no_such_directive; }');
ok(!eval { $t->run; 1 }, 'run dies on a bad configuration');
like($@, qr/unknown directive "no_such_directive"/, 'with nginx\'s message');

$t->write_conf($conf =~ s/VERSION/v1/r);
my ($status, $output) = $t->nginx_test;
is($status, 0, 'nginx -t') or diag $output;
like($output, qr/syntax is ok/, 'nginx -t output');

$t->run;
ok($t->master_pid, 'nginx master running');
is(scalar(my @workers = $t->worker_pids), 1, 'one worker');

my $r = $t->http(GET => '/');
is($r->{status}, 200, 'GET / status');
is($r->{body}, 'hello', 'GET / body');
like($r->{headers}{server}, qr/^nginx/, 'response headers');
ok(defined $r->{time} && $r->{time} >= 0, 'request time');

my $bytes = join '', map { chr } 0 .. 255, 0 .. 255;
$r = $t->http(PUT => '/dav/blob', body => $bytes);
is($r->{status}, 201, 'PUT binary body');
$r = $t->http(GET => '/dav/blob');
is($r->{body}, $bytes, 'binary body round trip');
is($r->{headers}{'content-length'}, 512, 'content-length');

$r = $t->http(GET => '/', https => 1, port => 1,
              cert => $client->{cert}, key => $client->{key});
is($r->{status}, 200, 'https with client certificate');
is($r->{body}, 'dn=CN=device-1', 'client certificate presented');

$r = $t->http(GET => '/', https => 1, port => 1, host => 'localhost');
is($r->{body}, 'dn=', 'https without client certificate');

$r = $t->http(GET => "https://127.0.0.1:${\ $t->port(1)}/", insecure => 1,
              http_version => '1.1');
is($r->{http_version}, '1.1', 'full URL, insecure, HTTP/1.1');

$r = $t->http(GET => '/', port => 7);
is($r->{status}, 0, 'connection refused gives status 0');
ok($r->{error}, 'and an error message');

# Keep-alive: a sequential batch uses one connection.

my $batch = $t->http_batch([ map { [ GET => '/' ] } 1 .. 3 ]);
is_deeply([ map { $_->{num_connects} } @{ $batch->{results} } ], [ 1, 0, 0 ],
          'sequential batch reuses the connection');

# Reload: new workers, new configuration.

my $mark = $t->log_mark;
$t->write_conf($conf =~ s/VERSION/v2/r);
ok($t->reload, 'reload');
my @new = $t->worker_pids;
is(scalar @new, 1, 'one new worker');
isnt($new[0], $workers[0], 'worker pid changed');
is($t->http(GET => '/version')->{body}, 'v2', 'new configuration serves');
like($t->wait_for_log(qr/reconfiguring/, 5, from => $mark),
     qr/signal 1 \(SIGHUP\)/, 'wait_for_log');

$t->write_conf('bad directive;');
ok(!$t->reload(allow_fail => 1), 'reload with a bad configuration fails');
is($t->http(GET => '/version')->{body}, 'v2', 'old configuration still serves');
$t->write_conf($conf =~ s/VERSION/v2/r);
$mark = $t->log_mark;

# Parallel requests

my $par = $t->http_parallel(20, GET => '/');
is(scalar @{ $par->{results} }, 20, '20 parallel results');
is_deeply($par->{statuses}, { 200 => 20 }, 'all 200');
ok(!grep({ !defined $_->{time} } @{ $par->{results} }), 'per-request times');
ok($par->{wall} > 0, 'wall time');

is_deeply([ $t->log_alerts(from => $mark) ], [], 'no alerts in error.log');

# Stop

my $master = $t->master_pid;
$t->stop;
ok(!$t->master_pid && !kill(0, $master) || _zombie($master), 'nginx stopped');
$r = $t->http(GET => '/');
is($r->{status}, 0, 'port closed');

# A helper process of the test's own, e.g. a fake Apple server.

my $fake_port = $t->port(2);    # picked before the fork
my $fake = $t->spawn(sub {
    my $listen = IO::Socket::IP->new(LocalHost => '127.0.0.1',
                                     LocalPort => $fake_port,
                                     Listen => 5, ReuseAddr => 1)
        or die "listen: $!";
    while (my $c = $listen->accept) {
        local $/ = "\r\n\r\n";
        <$c>;
        print $c "HTTP/1.0 200 OK\r\nContent-Length: 4\r\n\r\nfake";
        close $c;
    }
});
$t->wait_for(sub { IO::Socket::IP->new(PeerHost => '127.0.0.1',
                                       PeerPort => $fake_port) },
             what => 'the fake server');
is($t->http(GET => '/', port => 2)->{body}, 'fake', 'spawned fake server');
$t->stop_spawned($fake);
ok(!kill(0, $fake), 'spawned process stopped and reaped');

# A test that dies still cleans up: its directory and its Redis are gone.

my $child = $t->run_command(
    [ $^X, "-I$FindBin::Bin/lib", '-MMDM::Test', '-e', <<'EOF' ],
        my $t = MDM::Test->new(name => 'dying');
        $t->start_redis;
        print $t->dir, " ", $t->redis_pid, "\n";
        die "dying on purpose\n";
EOF
    env => { TEST_KEEP => '' });
my ($child_dir, $child_redis) = split ' ', $child->{stdout};
isnt($child->{status}, 0, 'dying test exits non-zero');
ok($child_dir && !-e $child_dir, 'dying test directory removed');
ok($child_redis && !_alive($child_redis), 'dying test redis stopped');

# Cleanup

$t->cleanup;
ok(!$t->pg_running, 'postgres stopped at cleanup');
ok(!$t->redis_pid, 'redis stopped at cleanup');
if ($ENV{TEST_KEEP}) {
    ok(-d $dir, 'test directory kept (TEST_KEEP)');
} else {
    ok(!-e $dir, 'test directory removed');
}

done_testing;

sub _alive {
    my ($pid) = @_;
    return kill(0, $pid) && !_zombie($pid);
}

sub _zombie {
    my ($pid) = @_;
    open my $fh, '<', "/proc/$pid/stat" or return 1;
    return <$fh> =~ /\) Z /;
}
