#!/usr/bin/perl
# SCEP (ngx_mdm_scep) and bad input: transport garbage gets HTTP 400 (413
# when too large), a well-formed request we refuse gets CertRep FAILURE
# with the RFC's failInfo at 200; each one log line, no crash, nothing
# written.  PKIOperation by GET (escaped or not), the real vectors, and
# PostgreSQL down (503).

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use MIME::Base64 qw(encode_base64);
use Test::More;
use MDM::Test;

my $t = MDM::Test->new(name => 'scep-input')->plan_skip_unless_module;

$t->start_postgres;

my $ca = $t->make_ca(name => 'scep-ca', cn => 'nginx-mdm input CA');
my $other = $t->make_ca(name => 'other-ca', cn => 'someone else');

my $tool = scep_client_tool($t);

$t->write_conf(<<"EOF");
    mdm_postgres "%%PG%% sslmode=disable";
    mdm_postgres_connect_timeout 1s;
    mdm_helper_path %%TESTDIR%%/helper;
    mdm_retry_after 9;

    mdm_scep_ca_certificate $ca->{cert};
    mdm_scep_ca_key $ca->{key};
    mdm_scep_challenge static-secret;
    mdm_scep_max_body 16k;

    server {
        listen 127.0.0.1:%%PORT_0%%;

        location = /scep { mdm_scep; }
        location = /ca.crl { mdm_scep_crl; }
        location = /fresh.crl { mdm_scep_crl; mdm_scep_crl_cache 0; }
        location = /status { mdm_status; }
    }
EOF
$t->run;

my $files = () = glob($t->repo_dir . '/ngx_mdm_core/sql/[0-9]*.sql');
$t->wait_for(sub {
    $t->http(GET => '/status')->{body} =~ /"schema_version": $files\b/;
}, what => 'the schema');

my $op = '/scep?operation=PKIOperation';
my $key = $t->path('device.key');

# the scep_client tool: one request to a file, one reply read

sub request {
    my (%o) = @_;
    my $out = $t->path('req-' . ++$t->{n} . '.der');
    my $r = $t->run_command([ $tool, 'request', '-to', $o{to} // $ca->{cert},
                              '-key', $o{key} // $key,
                              '-signer-out', $t->path('signer.pem'),
                              '-out', $out,
                              map { ("-$_" => $o{$_}) }
                              grep { !/^(to|key)$/ } sort keys %o ]);
    die "request: $r->{stderr}" if $r->{status};
    return $out;
}

sub reply {
    my ($body, %o) = @_;
    $t->write_file('reply.der', $body);
    my $r = $t->run_command([ $tool, 'reply', '-in', $t->path('reply.der'),
                              '-ca', $ca->{cert},
                              '-signer', $t->path('signer.pem'),
                              '-key', $o{key} // $key ]);
    return $r->{stdout};
}

sub post {
    my ($file, %o) = @_;
    return $t->http(POST => $op, body_file => $file, %o);
}

sub certificates {
    return $t->psql('SELECT count(*) FROM mdm_certificates');
}

# one log line for each refusal

sub one_line {
    my ($mark, $re, $name) = @_;
    my $log = $t->wait_for_log($re, 5, from => $mark);
    my @lines = grep { /mdm scep:/ } split /\n/, $t->error_log(from => $mark);
    is(scalar @lines, 1, "$name: one log line") or diag explain \@lines;
    like($log, qr/\[info\]/, "$name: logged at info (the client's fault)");
}

# a good request first: the baseline

my $good = request(challenge => 'static-secret', cn => 'good');
my $r = post($good);
is($r->{status}, 200, 'a good PKCSReq: 200');
is($r->{headers}{'content-type'}, 'application/x-pki-message',
   '... application/x-pki-message');
like(reply($r->{body}), qr/^status=0 .*certs=1/, '... SUCCESS, certificate');
is(certificates(), 1, '... recorded');

# transport-level garbage: HTTP 400

my $der = $t->read_file($good);
my %garbage = (
    'garbage body' => "hello, this is not DER\n",
    'truncated DER' => substr($der, 0, length($der) / 2),
    'DER with trailing bytes' => $der . "\0\0",
    'a DER certificate, not a SignedData' => $t->cert_der($ca->{cert}),
    'empty body' => '',
);

for my $name (sort keys %garbage) {
    my $mark = $t->log_mark;
    $t->write_file('garbage', $garbage{$name});
    $r = post($t->path('garbage'));
    is($r->{status}, 400, "$name: 400");
    one_line($mark, qr/mdm scep: (bad pkiMessage|PKIOperation without)/,
             $name);
}

# operations and methods

my $mark = $t->log_mark;
$r = $t->http(GET => '/scep?operation=GetNextCACert');
is($r->{status}, 400, 'unknown operation: 400');
one_line($mark, qr/unknown operation "GetNextCACert"/, 'unknown operation');

$mark = $t->log_mark;
$r = $t->http(GET => '/scep');
is($r->{status}, 400, 'no operation: 400');
one_line($mark, qr/no operation/, 'no operation');

$r = $t->http(POST => '/scep?operation=GetCACaps', body => 'x');
is($r->{status}, 405, 'GetCACaps by POST: 405');
$r = $t->http(PUT => $op, body => $der);
is($r->{status}, 405, 'PKIOperation by PUT: 405');

# oversized: Content-Length first, and chunked (no length to check first)

$t->write_file('big', 'x' x (17 * 1024));
$mark = $t->log_mark;
$r = post($t->path('big'));
is($r->{status}, 413, 'body over mdm_scep_max_body: 413');
one_line($mark, qr/over mdm_scep_max_body/, 'oversized body');

$mark = $t->log_mark;
$r = post($t->path('big'), headers => [ 'Transfer-Encoding' => 'chunked' ]);
is($r->{status}, 413, 'chunked body over mdm_scep_max_body: 413');
one_line($mark, qr/over mdm_scep_max_body/, 'oversized chunked body');

# PKIOperation by GET: base64, URL-escaped or not (macOS leaves + and /)

for my $escape (0, 1) {
    my $req = $t->read_file(request(challenge => 'static-secret',
                                    cn => "get-$escape"));
    my $b64 = encode_base64($req, '');
    $b64 =~ s/([+\/=])/sprintf '%%%02X', ord $1/ge if $escape;
    $r = $t->http(GET => "/scep?operation=PKIOperation&message=$b64");
    is($r->{status}, 200, 'PKIOperation by GET, '
                          . ($escape ? 'URL-escaped' : 'bare + and /'));
    like(reply($r->{body}), qr/^status=0 /, '... SUCCESS');
}

$mark = $t->log_mark;
$r = $t->http(GET => '/scep?operation=PKIOperation&message=%%%not*base64');
is($r->{status}, 400, 'GET message that is not base64: 400');
one_line($mark, qr/not base64/, 'GET message not base64');

$r = $t->http(GET => '/scep?operation=PKIOperation');
is($r->{status}, 400, 'GET without message: 400');

my $count = certificates();

# well-formed requests we refuse: CertRep FAILURE, failInfo, HTTP 200

my @refused = (
    [ 'encrypted to another CA', { to => $other->{cert},
                                   challenge => 'static-secret' },
      1, qr/not encrypted to our certificate/ ],
    [ 'signedData inside the envelope', { challenge => 'static-secret',
                                          'inner-type' => 'signed' },
      2, qr/not an EnvelopedData of data/ ],
    [ 'a certificate inside the envelope, not a CSR',
      { challenge => 'static-secret', inner => 'raw:' . $ca->{cert} },
      2, qr/messageData does not parse/ ],
    [ 'RSA 1024 device key', { challenge => 'static-secret',
                               key => $t->path('rsa1024.key'),
                               keytype => 'rsa:1024' },
      2, qr/not 2048 to 8192 bits/ ],
    [ 'EC P-521 device key', { challenge => 'static-secret',
                               key => $t->path('p521.key'),
                               keytype => 'ec:P-521' },
      0, qr/neither RSA nor EC P-256\/P-384/ ],
    [ 'wrong static challenge, one-time ones unknown',
      { challenge => 'not-it' }, 2, qr/challengePassword is unknown/ ],
    [ 'DES envelope, mdm_scep_des off',
      { challenge => 'static-secret', cipher => 'des' },
      0, qr/DES envelope/ ],
);

for my $case (@refused) {
    my ($name, $opts, $fail, $log) = @$case;
    my $file = request(%$opts);
    $mark = $t->log_mark;
    $r = post($file);
    is($r->{status}, 200, "$name: 200");
    like(reply($r->{body}, key => $opts->{key}),
         qr/^status=2 failInfo=$fail /, "... CertRep FAILURE failInfo $fail");
    one_line($mark, $log, $name);
}

is(certificates(), $count, 'refused requests wrote nothing');

# the real vectors: Apple's mdmclient PKCSReq to an NDES CA (SHA-512, 3DES,
# 8-byte nonce), and a CertRep sent where a request goes

my $vectors = $ENV{MDM_VECTORS} // $t->repo_dir . '/../shared/vectors';
my $apple = "$vectors/scep/commandment_mdmclient-PKIOperation.der";

SKIP: {
    skip 'no shared vectors', 9 unless -f $apple;

    $mark = $t->log_mark;
    $r = post($apple);
    is($r->{status}, 200, 'Apple PKCSReq for another CA: 200');
    $t->write_file('apple-rep.der', $r->{body});
    my $print = $t->run_command([ 'openssl', 'cms', '-cmsout', '-print',
                                  '-inform', 'DER', '-in',
                                  $t->path('apple-rep.der') ])->{stdout};
    like($print, qr/140BC832976B3D0300BE8F5C2E35CEDF66E73D7B/,
         '... its transactionID echoed');
    like($print, qr/sha512/, '... its SHA-512 mirrored');
    my $v = $t->run_command([ 'openssl', 'cms', '-verify', '-inform', 'DER',
                              '-in', $t->path('apple-rep.der'),
                              '-CAfile', $ca->{cert}, '-purpose', 'any',
                              '-content', '/dev/null', '-binary',
                              '-out', '/dev/null' ]);
    is($v->{status}, 0, '... a CertRep signed by our CA')
        or diag $v->{stderr};
    one_line($mark, qr/not encrypted to our certificate/, 'Apple vector');

    # micromdm's CertRep has no senderNonce: no CertRep can answer it
    $mark = $t->log_mark;
    $r = post("$vectors/scep/micromdm-scep_CertRep.der");
    is($r->{status}, 400, 'a CertRep without senderNonce posted: 400');
    one_line($mark, qr/senderNonce is missing/, 'CertRep vector');
}

is(certificates(), $count, 'the vectors wrote nothing');

# PostgreSQL down: 503 with Retry-After for what needs it, the rest works

is($t->http(GET => '/ca.crl')->{status}, 200, 'the CRL, fetched once');

$t->stop_postgres(mode => 'fast');
$mark = $t->log_mark;
$r = post(request(challenge => 'static-secret', cn => 'pg-down'));
is($r->{status}, 503, 'PostgreSQL down: PKIOperation 503');
is($r->{headers}{'retry-after'}, 9, '... with Retry-After');
$r = $t->http(GET => '/scep?operation=GetCACaps');
is($r->{status}, 200, '... GetCACaps still answers');
$r = $t->http(GET => '/scep?operation=GetCACert');
is($r->{status}, 200, '... GetCACert still answers');
is($t->http(GET => '/ca.crl')->{status}, 200,
   '... the CRL too, from the cache (mdm_scep_crl_cache)');
$r = $t->http(GET => '/fresh.crl');
is($r->{status}, 503, '... but a CRL to sign anew: 503');
is($r->{headers}{'retry-after'}, 9, '... with Retry-After');

is_deeply([ $t->log_alerts ], [], 'no alerts, no crash');

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
