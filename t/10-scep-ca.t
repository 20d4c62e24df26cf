#!/usr/bin/perl
# SCEP (ngx_mdm_scep) as a CA: nginx -t on bad CA directives, an issuing
# CA under a root (GetCACert chain, scepclient through it), an ECDSA CA
# with an RSA RA, EC device keys and SANs, a request sent again (same
# transaction), CertPoll, GetCert, revocation, GetCRL and the DER CRL
# location, and CA rotation by reload.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Digest::SHA qw(sha256_hex);
use File::Copy qw(copy);
use Test::More;
use MDM::Test;

my $t = MDM::Test->new(name => 'scep-ca')->plan_skip_unless_module;

$t->start_postgres;

my $root = $t->make_ca(name => 'root-ca', cn => 'nginx-mdm test root');
my $ca = $t->make_ca(name => 'issuing-ca', cn => 'nginx-mdm issuing CA',
                     ca => $root);
my $ec = $t->make_ca(name => 'ec-ca', cn => 'nginx-mdm ECDSA CA',
                     key => 'ec:P-256');
my $ra = $t->make_cert(ca => $ec, cn => 'nginx-mdm SCEP RA',
                       ext => 'clientAuth');
my $next = $t->make_ca(name => 'next-ca', cn => 'nginx-mdm next CA');

my $tool = scep_client_tool($t);

# the CA files as the configuration names them, to rotate them later
copy($ca->{cert}, $t->path('ca.pem'));
copy($ca->{key}, $t->path('ca.key'));
$t->write_file('ca.pass', "no passphrase here\n");

my $conf = <<"EOF";
    mdm_postgres "%%PG%% sslmode=disable";
    mdm_helper_path %%TESTDIR%%/helper;

    server {
        listen 127.0.0.1:%%PORT_0%%;

        mdm_scep_ca_certificate %%TESTDIR%%/ca.pem;
        mdm_scep_ca_key %%TESTDIR%%/ca.key;
        mdm_scep_ca_chain $root->{cert};
        mdm_scep_challenge static-secret;
        mdm_scep_des on;
        mdm_scep_crl_cache 0;

        location = /scep { mdm_scep; }
        location = /ca.crl { mdm_scep_crl; }

        location = /ec {
            mdm_scep_ca_certificate $ec->{cert};
            mdm_scep_ca_key $ec->{key};
            mdm_scep_ca_chain off;
            mdm_scep_ra_certificate $ra->{cert};
            mdm_scep_ra_key $ra->{key};
            mdm_scep_prepare off;
            mdm_scep;
        }

        location = /status { mdm_status; }
    }
EOF

# nginx -t: what is wrong, and where

my @bad = (
    [ 'no key', sub { $_[0] =~ s/\n\s*mdm_scep_ca_key %%TESTDIR%%.*;//r },
      qr/mdm_scep needs mdm_scep_ca_certificate and mdm_scep_ca_key/ ],
    [ 'key of another certificate',
      sub { $_[0] =~ s/(mdm_scep_ca_key) \S+\/ca.key/$1 $next->{key}/r },
      qr/CA key does not match the CA certificate/ ],
    [ 'ECDSA CA without an RSA RA',
      sub { $_[0] =~ s/\n\s*mdm_scep_ra_(certificate|key) .*;//gr },
      qr/the key that opens envelopes \(RA, else CA\) must be RSA/ ],
    [ 'no such file',
      sub { $_[0] =~ s/ca\.pem;/nonexistent.pem;/r },
      qr/mdm_scep_ca_certificate: .*nonexistent\.pem/ ],
    [ 'no mdm_postgres', sub { $_[0] =~ s/^\s*mdm_postgres .*;//mr },
      qr/mdm_scep needs mdm_postgres/ ],
    [ 'not a passphrase file',
      sub { $_[0] =~ s/(ca\.key);/$1 %%TESTDIR%%\/missing.pass;/r },
      qr/mdm_scep_ca_key: cannot open passphrase file/ ],
);

for my $case (@bad) {
    my ($name, $edit, $re) = @$case;
    $t->write_conf($edit->($conf));
    my ($st, $out) = $t->nginx_test;
    isnt($st, 0, "nginx -t fails: $name");
    like($out, $re, '... and says why') or diag $out;
}

$t->write_conf($conf =~ s/(ca\.key);/$1 %%TESTDIR%%\/ca.pass;/r);
my ($st, $out) = $t->nginx_test;
is($st, 0, 'a passphrase file for an unencrypted key is fine') or diag $out;

$t->write_conf($conf);
my $start = $t->log_mark;
$t->run;

my $files = () = glob($t->repo_dir . '/ngx_mdm_core/sql/[0-9]*.sql');
$t->wait_for(sub {
    $t->http(GET => '/status')->{body} =~ /"schema_version": $files\b/;
}, what => 'the schema');

# the scep_client tool

sub request {
    my (%o) = @_;
    my $out = $t->path('req-' . ++$t->{n} . '.der');
    my $key = delete $o{key} // $t->path('device.key');
    my $signer = delete $o{'signer-out'} // $t->path('signer.pem');
    my $r = $t->run_command([ $tool, 'request', '-to', delete $o{to},
                              '-key', $key, '-signer-out', $signer,
                              '-out', $out,
                              map { ("-$_" => $o{$_}) } sort keys %o ]);
    die "request: $r->{stderr}" if $r->{status};
    return $out;
}

sub reply {
    my ($body, %o) = @_;
    $t->write_file('reply.der', $body);
    my $r = $t->run_command([ $tool, 'reply', '-in', $t->path('reply.der'),
                              '-ca', $o{ca}, '-signer',
                              $o{signer} // $t->path('signer.pem'),
                              '-key', $o{key} // $t->path('device.key'),
                              map { ("-$_" => $o{$_}) }
                              grep { /out$/ } keys %o ]);
    return $r->{stdout};
}

sub pki {
    my ($path, $file) = @_;
    return $t->http(POST => "$path?operation=PKIOperation",
                    body_file => $file);
}

sub openssl {
    return $t->run_command([ 'openssl', @_ ]);
}

# an issuing CA under a root: GetCACert sends the chain as PKCS#7

my $r = $t->http(GET => '/scep?operation=GetCACert');
is($r->{headers}{'content-type'}, 'application/x-x509-ca-ra-cert',
   'GetCACert with a chain: application/x-x509-ca-ra-cert');
$t->write_file('cacert.p7', $r->{body});
my $p7 = openssl('pkcs7', '-inform', 'DER', '-in', $t->path('cacert.p7'),
                 '-print_certs')->{stdout};
like($p7, qr/subject=CN = nginx-mdm issuing CA/, '... the issuing CA');
like($p7, qr/subject=CN = nginx-mdm test root/, '... and the root');

SKIP: {
    skip 'scepclient not installed', 2
        unless grep { -x "$_/scepclient" } split /:/, $ENV{PATH};

    my $dir = $t->path('scepclient');
    mkdir $dir;
    my $run = $t->run_command([ 'scepclient', '-server-url',
                                'http://127.0.0.1:' . $t->port(0) . '/scep',
                                '-private-key', "$dir/key.pem",
                                '-challenge', 'static-secret',
                                '-cn', 'through-the-chain' ],
                              cwd => $dir, timeout => 60);
    is($run->{status}, 0, 'scepclient enrolls through the chain')
        or diag $run->{stdout}, $run->{stderr};
    is(openssl('verify', '-CAfile', $root->{cert}, '-untrusted',
               $ca->{cert}, "$dir/client.pem")->{stdout},
       "$dir/client.pem: OK\n", 'openssl verify: leaf, issuing CA, root');
}

# EC device keys and SANs

for my $curve ('P-256', 'P-384') {
    my $key = $t->path("$curve.key");
    my $file = request(to => $ca->{cert}, key => $key, keytype => "ec:$curve",
                       cn => "ec-$curve", challenge => 'static-secret',
                       san => 'DNS:ec.example,URI:urn:uuid:1234');
    $r = pki('/scep', $file);
    like(reply($r->{body}, ca => $ca->{cert}, key => $key,
               out => $t->path("$curve.pem")),
         qr/^status=0 /, "EC $curve device key: SUCCESS");
    my $text = openssl('x509', '-in', $t->path("$curve.pem"), '-noout',
                       '-text')->{stdout};
    like($text, qr/ASN1 OID: \Q@{[ $curve eq 'P-256' ? 'prime256v1'
                                                     : 'secp384r1' ]}\E/,
         "... an EC $curve certificate");
    like($text, qr/Key Usage: critical\s+Digital Signature\n/,
         '... keyUsage digitalSignature alone (no keyEncipherment for EC)');
    like($text, qr/DNS:ec\.example, URI:urn:uuid:1234/, '... SANs kept');
    is(openssl('verify', '-CAfile', $root->{cert}, '-untrusted',
               $ca->{cert}, $t->path("$curve.pem"))->{status}, 0,
       '... openssl verify accepts it');
}

# an ECDSA CA with an RSA RA: the RA opens envelopes and signs CertReps

$r = $t->http(GET => '/ec?operation=GetCACert');
is($r->{headers}{'content-type'}, 'application/x-x509-ca-ra-cert',
   'ECDSA CA + RSA RA: GetCACert sends both');
my $file = request(to => $ra->{cert}, cn => 'under-ecdsa',
                   challenge => 'static-secret');
$r = pki('/ec', $file);
like(reply($r->{body}, ca => $ra->{cert}, out => $t->path('ec-leaf.pem')),
     qr/^status=0 /, '... a request to the RA: SUCCESS, CertRep by the RA');
like(openssl('x509', '-in', $t->path('ec-leaf.pem'), '-noout', '-text')
         ->{stdout},
     qr/Signature Algorithm: ecdsa-with-SHA256/,
     '... the certificate signed by the ECDSA CA');
is(openssl('verify', '-CAfile', $ec->{cert}, $t->path('ec-leaf.pem'))
       ->{status}, 0, '... openssl verify accepts it');

# a one-time challenge, and the same request sent again (a lost answer)

my $challenge = 'c0ffee00' x 6;
$t->psql("INSERT INTO mdm_challenges (digest, purpose, expires_at) VALUES "
         . "(decode('" . sha256_hex($challenge) . "', 'hex'), 'enroll', "
         . "now() + interval '1 hour')");

$file = request(to => $ca->{cert}, cn => 'lost-answer', tid => 'TX-LOST-1',
                challenge => $challenge);
$r = pki('/scep', $file);
my ($serial) = reply($r->{body}, ca => $ca->{cert},
                     out => $t->path('lost.pem')) =~ /^status=0 .*serial=(\w+)/;
ok($serial, "one-time challenge: SUCCESS, serial $serial");

my $count = $t->psql('SELECT count(*) FROM mdm_certificates');
$r = pki('/scep', $file);
like(reply($r->{body}, ca => $ca->{cert}), qr/^status=0 .*serial=$serial /,
     'the same request again: SUCCESS with the same certificate');
is($t->psql('SELECT count(*) FROM mdm_certificates'), $count,
   '... nothing new recorded');

$file = request(to => $ca->{cert}, cn => 'lost-answer', tid => 'TX-OTHER',
                challenge => $challenge);
like(reply(pki('/scep', $file)->{body}, ca => $ca->{cert}),
     qr/^status=2 failInfo=2 /, 'the challenge in another transaction: '
                                . 'FAILURE badRequest');

# CertPoll: we never answer PENDING; the transaction's certificate

$file = request(to => $ca->{cert}, type => 'certpoll', tid => 'TX-LOST-1',
                subject => 'lost-answer');
like(reply(pki('/scep', $file)->{body}, ca => $ca->{cert}),
     qr/^status=0 .*serial=$serial /, 'CertPoll: the certificate issued');

$file = request(to => $ca->{cert}, type => 'certpoll', tid => 'TX-NEVER',
                subject => 'lost-answer');
like(reply(pki('/scep', $file)->{body}, ca => $ca->{cert}),
     qr/^status=2 failInfo=4 /, 'CertPoll for nothing: FAILURE badCertId');

# GetCert by issuer and serial

$file = request(to => $ca->{cert}, type => 'getcert', serial => "0x$serial");
like(reply(pki('/scep', $file)->{body}, ca => $ca->{cert},
           out => $t->path('got.pem')),
     qr/^status=0 .*serial=$serial /, 'GetCert: SUCCESS');
is($t->read_file('got.pem'), $t->read_file('lost.pem'),
   '... the certificate issued');

$file = request(to => $ca->{cert}, type => 'getcert', serial => 99);
like(reply(pki('/scep', $file)->{body}, ca => $ca->{cert}),
     qr/^status=2 failInfo=4 /, 'GetCert, unknown serial: badCertId');

$file = request(to => $ca->{cert}, type => 'getcert', serial => "0x$serial",
                issuer => $next->{cert});
like(reply(pki('/scep', $file)->{body}, ca => $ca->{cert}),
     qr/^status=2 failInfo=4 /, 'GetCert, another issuer: badCertId');

# revocation (the admin API sets revoked_at): the CRL lists it

my $dec = hex $serial;
$t->psql("UPDATE mdm_certificates SET revoked_at = now(), "
         . "revocation_reason = 1 WHERE serial = $dec");

$r = $t->http(GET => '/ca.crl');
is($r->{status}, 200, 'CRL location: 200');
is($r->{headers}{'content-type'}, 'application/pkix-crl',
   '... application/pkix-crl');
$t->write_file('ca.crl', $r->{body});
my $crl = openssl('crl', '-inform', 'DER', '-in', $t->path('ca.crl'),
                  '-CAfile', $ca->{cert}, '-noout', '-text');
like($crl->{stderr} . $crl->{stdout}, qr/verify OK/,
     '... a CRL signed by the CA');
like($crl->{stdout}, qr/Serial Number: \U$serial\E/i, '... listing the serial');
like($crl->{stdout}, qr/CRL Reason Code:\s+Key Compromise/,
     '... with its reason (revocation_reason)');
my ($n1) = $crl->{stdout} =~ /X509v3 CRL Number:\s+(\d+)/;

$r = $t->http(GET => '/ca.crl');
$t->write_file('ca2.crl', $r->{body});
my ($n2) = openssl('crl', '-inform', 'DER', '-in', $t->path('ca2.crl'),
                   '-noout', '-text')->{stdout} =~ /CRL Number:\s+(\d+)/;
cmp_ok($n2, '>', $n1, 'cRLNumber increases');

openssl('crl', '-inform', 'DER', '-in', $t->path('ca.crl'),
        '-out', $t->path('ca-crl.pem'));
my $chain = $t->path('chain+crl.pem');
$t->write_file('chain+crl.pem', $t->read_file($root->{cert})
               . $t->read_file($ca->{cert}) . $t->read_file('ca-crl.pem'));
my $v = openssl('verify', '-crl_check', '-CAfile', $chain,
                $t->path('lost.pem'));
isnt($v->{status}, 0, 'openssl verify -crl_check refuses it');
like($v->{stdout} . $v->{stderr}, qr/certificate revoked/,
     '... certificate revoked');

# GetCRL: the same CRL in a CertRep

$file = request(to => $ca->{cert}, type => 'getcrl', serial => "0x$serial");
like(reply(pki('/scep', $file)->{body}, ca => $ca->{cert},
           'crl-out' => $t->path('getcrl.der')),
     qr/^status=0 failInfo=-1 certs=0 crls=1 /, 'GetCRL: SUCCESS with a CRL');
like(openssl('crl', '-inform', 'DER', '-in', $t->path('getcrl.der'),
             '-noout', '-text')->{stdout},
     qr/Serial Number: \U$serial\E/i, '... listing the revoked serial');

$file = request(to => $ca->{cert}, type => 'getcrl', serial => 1,
                issuer => $next->{cert});
like(reply(pki('/scep', $file)->{body}, ca => $ca->{cert}),
     qr/^status=2 failInfo=4 /, 'GetCRL for another issuer: badCertId');

# nginx -s reload rotates the CA

copy($next->{cert}, $t->path('ca.pem'));
copy($next->{key}, $t->path('ca.key'));
$t->reload;

$r = $t->http(GET => '/scep?operation=GetCACert');
$t->write_file('cacert2.p7', $r->{body});
like(openssl('pkcs7', '-inform', 'DER', '-in', $t->path('cacert2.p7'),
             '-print_certs')->{stdout},
     qr/subject=CN = nginx-mdm next CA/, 'after reload: GetCACert sends the '
                                         . 'new CA');
$file = request(to => $next->{cert}, cn => 'after-reload',
                challenge => 'static-secret');
like(reply(pki('/scep', $file)->{body}, ca => $next->{cert},
           out => $t->path('next.pem')),
     qr/^status=0 /, '... and issues with it');
is(openssl('verify', '-CAfile', $next->{cert}, $t->path('next.pem'))
       ->{status}, 0, '... openssl verify against the new CA');

is_deeply([ $t->log_alerts(from => $start) ], [], 'no alerts');

done_testing;


# bench/scep/scep_client.c, built against the library for this test
sub scep_client_tool {
    my ($t) = @_;
    my $repo = $t->repo_dir;
    my $bin = $t->path('scep_client');
    my $r = $t->run_command([ 'cc', '-O1', '-o', $bin,
                              "-I$repo/ngx_mdm_scep",
                              "$repo/bench/scep/scep_client.c",
                              map({ "$repo/ngx_mdm_scep/$_" }
                                  qw(ngx_mdm_scep_pki.c ngx_mdm_scep_ca.c
                                     ngx_mdm_scep_client.c)),
                              '-lssl', '-lcrypto' ], timeout => 120);
    die "cannot build scep_client: $r->{stderr}" if $r->{status};
    return $bin;
}
