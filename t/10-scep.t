#!/usr/bin/perl
# SCEP (ngx_mdm_scep): GetCACaps and GetCACert, Debian's scepclient
# (micromdm's) enrolling with the static challenge and with one-time
# challenges and renewing with its certificate, openssl verify on what we
# issue, and what PostgreSQL records (serial, SHA-256, source, challenge,
# renewal, enrollment binding).

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Digest::SHA qw(sha256_hex);
use Test::More;
use MDM::Test;

my $t = MDM::Test->new(name => 'scep')->plan_skip_unless_module;

plan skip_all => 'scepclient not installed (Debian package scep)'
    unless grep { -x "$_/scepclient" } split /:/, $ENV{PATH};

$t->start_postgres;

my $ca = $t->make_ca(name => 'scep-ca', cn => 'nginx-mdm test SCEP CA');

$t->write_conf(<<"EOF");
    mdm_postgres "%%PG%% sslmode=disable";
    mdm_helper_path %%TESTDIR%%/helper;

    mdm_scep_ca_certificate $ca->{cert};
    mdm_scep_ca_key $ca->{key};
    mdm_scep_challenge static-secret;
    mdm_scep_validity 30d;
    mdm_scep_des on;

    server {
        listen 127.0.0.1:%%PORT_0%%;

        location = /mdm/apple/scep { mdm_scep; }
        location = /status { mdm_status; }
    }
EOF
$t->run;

my $files = () = glob($t->repo_dir . '/ngx_mdm_core/sql/[0-9]*.sql');
$t->wait_for(sub {
    $t->http(GET => '/status')->{body} =~ /"schema_version": $files\b/;
}, what => 'the schema');

my $url = '/mdm/apple/scep';

# GetCACaps: what we really support, one a line

my $r = $t->http(GET => "$url?operation=GetCACaps");
is($r->{status}, 200, 'GetCACaps: 200');
like($r->{headers}{'content-type'}, qr{^text/plain}, 'GetCACaps: text/plain');
my %caps = map { $_ => 1 } split /\n/, $r->{body};
ok($caps{$_}, "GetCACaps advertises $_")
    for qw(POSTPKIOperation SHA-256 AES SCEPStandard Renewal);
ok(!$caps{GetNextCACert}, 'GetCACaps does not advertise GetNextCACert');

# Apple appends "?operation=" to a URL that may carry a query already

$r = $t->http(GET => "$url?profile=1?operation=GetCACaps");
is($r->{status}, 200, 'operation after a second "?" (Apple) is found');
like($r->{body}, qr/^SCEPStandard$/m, '... and answered');

# GetCACert: the CA alone, as DER

$r = $t->http(GET => "$url?operation=GetCACert&message=any");
is($r->{status}, 200, 'GetCACert: 200');
is($r->{headers}{'content-type'}, 'application/x-x509-ca-cert',
   'GetCACert: application/x-x509-ca-cert');
ok($r->{body} eq $t->cert_der($ca->{cert}), 'GetCACert: the CA as DER');

# scepclient enrolls with the static challenge

my $dev = $t->path('dev1');
mkdir $dev;

sub scepclient {
    my ($dir, @args) = @_;
    return $t->run_command([ 'scepclient', '-server-url',
                             'http://127.0.0.1:' . $t->port(0) . $url,
                             '-private-key', "$dir/key.pem", @args ],
                           cwd => $dir, timeout => 60);
}

sub cert_field {
    my ($file, @opt) = @_;
    my $r = $t->run_command([ 'openssl', 'x509', '-in', $file, '-noout',
                              @opt ]);
    return $r->{stdout};
}

sub serial_of {
    my ($file) = @_;
    my ($hex) = cert_field($file, '-serial') =~ /serial=([0-9A-Fa-f]+)/;
    return hex $hex;
}

sub verify {
    my ($file) = @_;
    my $r = $t->run_command([ 'openssl', 'verify', '-CAfile', $ca->{cert},
                              '-purpose', 'sslclient', $file ]);
    return $r->{status} == 0 && $r->{stdout} =~ /: OK$/m;
}

my $mark = $t->log_mark;
my $run = scepclient($dev, '-challenge', 'static-secret', '-cn', 'device-one');
is($run->{status}, 0, 'scepclient enrolls with the static challenge')
    or diag $run->{stdout}, $run->{stderr};
ok(-s "$dev/client.pem", 'scepclient wrote the certificate');
ok(verify("$dev/client.pem"), 'openssl verify accepts it against our CA');

my $text = cert_field("$dev/client.pem", '-text');
like($text, qr/Subject:.*CN\s*=\s*device-one/, 'subject from the CSR');
like($text, qr/Key Usage: critical\s+Digital Signature, Key Encipherment/,
     'keyUsage digitalSignature + keyEncipherment');
like($text, qr/Extended Key Usage:\s+TLS Web Client Authentication/,
     'extendedKeyUsage clientAuth');
like($text, qr/Signature Algorithm: sha256WithRSAEncryption/, 'SHA-256');
my $days = ($text =~ /Not After : (.+)/)[0];
ok($days, "notAfter $days");

my $serial1 = serial_of("$dev/client.pem");
my $sha1 = $t->cert_sha256("$dev/client.pem");
is($t->psql("SELECT source || '|' || subject || '|' || "
            . "(not_after - not_before > interval '29 days') "
            . "FROM mdm_certificates WHERE serial = $serial1 "
            . "AND sha256 = decode('$sha1', 'hex')"),
   'static|CN=device-one,OU=MDM,O=scep-client,C=US|true',
   'recorded: serial, SHA-256 of the DER, subject, validity, source');
ok($t->psql("SELECT der = decode('" . unpack('H*',
                $t->cert_der("$dev/client.pem")) . "', 'hex') "
            . "FROM mdm_certificates WHERE serial = $serial1") eq 't',
   'recorded: the DER itself');
like($t->wait_for_log(qr/mdm scep: PKCSReq: issued serial \d+/, 5,
                      from => $mark),
     qr/\(static\)/, 'issue logged');

# the check-in module binds it to an enrollment (here by hand)

$t->psql("INSERT INTO mdm_cert_bindings (sha256, enrollment_id, not_after) "
         . "VALUES (decode('$sha1', 'hex'), 'UDID-ONE', now() + "
         . "interval '30 days')");

# a second run renews: RenewalReq signed by the certificate, no challenge
# needed (its CSR still carries the old one, ignored)

$run = scepclient($dev, '-cn', 'device-one');
is($run->{status}, 0, 'scepclient renews with its certificate')
    or diag $run->{stdout}, $run->{stderr};
my $serial2 = serial_of("$dev/client.pem");
isnt($serial2, $serial1, 'the renewal is a new certificate');
ok(verify("$dev/client.pem"), 'openssl verify accepts the renewal');
my $sha2 = $t->cert_sha256("$dev/client.pem");
is($t->psql("SELECT source || '|' || renewed_from FROM mdm_certificates "
            . "WHERE sha256 = decode('$sha2', 'hex')"),
   "renewal|$serial1", 'recorded as a renewal of the first');
is($t->psql("SELECT enrollment_id FROM mdm_cert_bindings "
            . "WHERE sha256 = decode('$sha2', 'hex')"),
   'UDID-ONE', 'the renewal is bound to the same enrollment');

# a renewal signed by a revoked certificate is refused

$t->psql("UPDATE mdm_certificates SET revoked_at = now() "
         . "WHERE serial = $serial2");
$mark = $t->log_mark;
$run = scepclient($dev, '-cn', 'device-one');
isnt($run->{status}, 0, 'a revoked certificate cannot renew');
like($run->{stdout} . $run->{stderr}, qr/failInfo: badRequest/,
     '... CertRep FAILURE badRequest');
ok($t->wait_for_log(qr/RenewalReq refused .*revoked/, 5, from => $mark),
   '... logged');
is($t->psql('SELECT count(*) FROM mdm_certificates'), 2, '... nothing written');

# one-time challenges, as ngx_mdm_challenge.c mints them: SHA-256 stored

sub challenge {
    my ($value, $expires, %opts) = @_;
    my $udid = $opts{udid} ? "'$opts{udid}'" : 'NULL';
    $t->psql("INSERT INTO mdm_challenges (digest, purpose, udid, expires_at) "
             . "VALUES (decode('" . sha256_hex($value) . "', 'hex'), 'api', "
             . "$udid, now() + interval '$expires')");
}

challenge('a1b2c3d4' x 6, '1 hour', udid => 'UDID-TWO');
my $dev2 = $t->path('dev2');
mkdir $dev2;
$run = scepclient($dev2, '-challenge', 'a1b2c3d4' x 6, '-cn', 'device-two');
is($run->{status}, 0, 'scepclient enrolls with a one-time challenge')
    or diag $run->{stdout}, $run->{stderr};
ok(verify("$dev2/client.pem"), 'openssl verify accepts it');
my $sha3 = $t->cert_sha256("$dev2/client.pem");
is($t->psql("SELECT c.source || '|' || ch.udid || '|' || "
            . "(ch.used_at IS NOT NULL) FROM mdm_certificates c "
            . "JOIN mdm_challenges ch ON ch.id = c.challenge_id "
            . "WHERE c.sha256 = decode('$sha3', 'hex')"),
   'challenge|UDID-TWO|true',
   'recorded with its challenge (bound to a device), which is used up');

# used again (another device), expired, unknown: FAILURE badRequest, logged

my $count = $t->psql('SELECT count(*) FROM mdm_certificates');

challenge('e' x 48, '-1 minute');

for my $case ([ 'a1b2c3d4' x 6, 'was used already' ],
              [ 'e' x 48, 'has expired' ],
              [ 'f' x 48, 'is unknown' ],
              [ 'wrong-static', 'is unknown' ])
{
    my ($challenge, $why) = @$case;
    my $d = $t->path('dev-' . substr($challenge, 0, 4));
    mkdir $d;
    $mark = $t->log_mark;
    $run = scepclient($d, '-challenge', $challenge, '-cn', 'intruder');
    isnt($run->{status}, 0, "challenge that $why: refused");
    like($run->{stdout} . $run->{stderr}, qr/failInfo: badRequest/,
         "... CertRep FAILURE badRequest");
    like($t->wait_for_log(qr/mdm scep: PKCSReq refused/, 5, from => $mark),
         qr/challengePassword \Q$why\E/, "... logged: $why");
    unlike($t->error_log(from => $mark), qr/\Q$challenge\E/,
           '... without the challenge');
}

is($t->psql('SELECT count(*) FROM mdm_certificates'), $count,
   'refused challenges wrote nothing');
is($t->psql("SELECT count(*) FROM mdm_challenges WHERE used_at IS NOT NULL"),
   1, 'and consumed nothing');

# no challenge at all

my $dev5 = $t->path('dev5');
mkdir $dev5;
$run = scepclient($dev5, '-cn', 'no-challenge');
isnt($run->{status}, 0, 'a PKCSReq without a challenge is refused');
like($run->{stdout} . $run->{stderr}, qr/failInfo: badRequest/,
     '... CertRep FAILURE badRequest');

# serials: unique, from the cluster sequence

my @serials = $t->psql_rows('SELECT serial FROM mdm_certificates');
my %seen;
ok(!(grep { $seen{$_}++ } @serials), 'serials are unique');
ok(!(grep { $_ < 4096 } @serials), 'serials come from mdm_certificate_serial');

is_deeply([ $t->log_alerts ], [], 'no alerts');

done_testing;
