package MDM::FakeAPNs;

# A fake APNs for the tests (DESIGN.md §7).  nginx itself terminates TLS
# and HTTP/2 with `ssl_verify_client on` (the client certificate must be a
# push certificate of the fake's CA) and checks the path and method; each
# push is then proxied to a small Perl HTTP/1.1 backend that records it
# (method, path, headers, body, client DN, nginx's connection number) as a
# JSON line and answers by the token's first byte:
#
#   00..3f  200, with an apns-id
#   40      400 BadDeviceToken          41  410 Unregistered
#   42      429 TooManyRequests twice, then 200
#   43      403 BadCertificate
#   44      400 MissingTopic (a bug of ours: not retried)
#   50      500 InternalServerError twice, then 200
#   45      410 Unregistered from nginx itself, before the body is read
#           (nginx then resets the stream: an answer from the headers)
#
#   my $apns = MDM::FakeAPNs->new($t);          # before write_conf
#   my $push = $apns->push_cert;                # { cert, key, topic }
#   $t->write_conf($apns->server_block . $module_conf);
#   $t->run; $apns->start;
#   my @pushes = $apns->pushes;                  # records, in order

use strict;
use warnings;

use IO::Socket::IP;
use JSON::PP ();
use Time::HiRes qw(time);

sub new {
    my ($class, $t, %opts) = @_;

    my $self = bless {
        t       => $t,
        port    => $t->port($opts{port} // 'apns'),
        backend => $t->port($opts{backend} // 'apns_backend'),
        log     => $t->path('apns-pushes.jsonl'),
        access  => $t->path('apns-access.log'),
    }, $class;

    $self->{tls} = $t->tls_server_cert;
    $self->{ca} = $t->make_ca(name => 'apns-push-ca');

    return $self;
}

sub port    { $_[0]{port} }
sub url     { 'https://127.0.0.1:' . $_[0]{port} }
sub tls_ca  { $_[0]{tls}{ca}{cert} }

# A push certificate as Apple issues them: UID is the topic.
sub push_cert {
    my ($self, %opts) = @_;
    my $uuid = $opts{uuid} // _uuid();
    my $topic = "com.apple.mgmt.External.$uuid";
    my $c = $self->{t}->make_cert(
        ca => $self->{ca}, name => $opts{name} // "push-$uuid",
        subject => "/C=US/CN=APSP:$uuid/UID=$topic",
        ext => 'clientAuth', %{ $opts{cert} || {} });
    return { %$c, topic => $topic };
}

sub _uuid {
    return sprintf '%08X-%04X-%04X-%04X-%012X', map { int rand 2**$_ }
        32, 16, 16, 16, 48;
}

# The server block (and its log format): goes into the http block.
sub server_block {
    my ($self, %opts) = @_;
    my $t = $self->{t};
    my $streams = $opts{streams} // 128;
    return <<"EOF";
    log_format fake_apns '\$connection \$request_uri \$status';

    server {
        listen 127.0.0.1:$self->{port} ssl http2;
        server_name localhost;

        ssl_certificate $self->{tls}{cert};
        ssl_certificate_key $self->{tls}{key};
        ssl_verify_client on;
        ssl_client_certificate $self->{ca}{cert};

        keepalive_requests 1000000;
        http2_max_concurrent_streams $streams;
        access_log $self->{access} fake_apns;

        location ~ ^/3/device/45[0-9a-f]+\$ {
            add_header apns-id 45454545-0000-4000-8000-000000000045;
            return 410 '{"reason":"Unregistered"}';
        }

        location ~ ^/3/device/[0-9a-f]+\$ {
            if (\$request_method != POST) {
                return 405 '{"reason":"MethodNotAllowed"}';
            }
            proxy_pass http://127.0.0.1:$self->{backend};
            proxy_set_header X-Fake-Client-DN \$ssl_client_s_dn;
            proxy_set_header X-Fake-Client-Serial \$ssl_client_serial;
            proxy_set_header X-Fake-Connection \$connection;
            proxy_set_header X-Fake-Protocol \$server_protocol;
        }

        location / {
            return 404 '{"reason":"BadPath"}';
        }
    }

EOF
}

sub start {
    my ($self) = @_;
    my $listen = IO::Socket::IP->new(
        LocalHost => '127.0.0.1', LocalPort => $self->{backend},
        Listen => 128, ReuseAddr => 1) or die "fake apns backend: $!\n";
    $self->{pid} = $self->{t}->spawn(sub { $self->_serve($listen) },
                                     log => 'apns-backend.log');
    close $listen;
    return $self;
}

sub _serve {
    my ($self, $listen) = @_;
    my (%seen, $n);
    my $json = JSON::PP->new->canonical;

    open my $log, '>>', $self->{log} or die "$self->{log}: $!\n";
    $log->autoflush(1);

    my %answers = (
        '40' => [ 400, 'BadDeviceToken' ],
        '41' => [ 410, 'Unregistered' ],
        '43' => [ 403, 'BadCertificate' ],
        '44' => [ 400, 'MissingTopic' ],
    );
    my %transient = ('42' => [ 429, 'TooManyRequests' ],
                     '50' => [ 500, 'InternalServerError' ]);

    while (my $c = $listen->accept) {
        my $req = _read_request($c) or next;
        my ($token) = $req->{path} =~ m{^/3/device/([0-9a-f]+)$};
        $token //= '';
        my $kind = substr $token, 0, 2;
        my $count = ++$seen{$token};

        my ($status, $reason) = (200, undef);
        if (my $a = $answers{$kind}) {
            ($status, $reason) = @$a;
        } elsif (($a = $transient{$kind}) && $count <= 2) {
            ($status, $reason) = @$a;
        }

        my $id = sprintf 'A0A0A0A0-0000-4000-8000-%012d', ++$n;
        my $body = defined $reason ? qq{{"reason":"$reason"}} : '';
        my $h = $req->{headers};
        print $log $json->encode({
            time => time, method => $req->{method}, path => $req->{path},
            token => $token, headers => $h, body => $req->{body},
            dn => $h->{'x-fake-client-dn'},
            serial => $h->{'x-fake-client-serial'},
            connection => $h->{'x-fake-connection'},
            protocol => $h->{'x-fake-protocol'},
            status => $status, apns_id => $id }) . "\n";

        print $c "HTTP/1.1 $status X\r\napns-id: $id\r\n"
            . "Content-Length: " . length($body) . "\r\n"
            . "Connection: close\r\n\r\n$body";
        close $c;
    }
}

sub _read_request {
    my ($c) = @_;
    my $buf = '';
    while ($buf !~ /\r\n\r\n/) {
        my $n = sysread $c, $buf, 65536, length $buf;
        return unless $n;
    }
    my ($head, $body) = split /\r\n\r\n/, $buf, 2;
    my ($line, @lines) = split /\r\n/, $head;
    my ($method, $path) = split ' ', $line;
    my %h;
    for (@lines) {
        my ($k, $v) = /^([^:]+):\s*(.*)$/ or next;
        $h{ lc $k } = $v;
    }
    my $len = $h{'content-length'} // 0;
    while (length $body < $len) {
        my $n = sysread $c, $body, $len - length $body, length $body;
        last unless $n;
    }
    return { method => $method, path => $path, headers => \%h,
             body => $body };
}

# Every push recorded so far, oldest first; with a token, only its own.
sub pushes {
    my ($self, $token) = @_;
    open my $fh, '<', $self->{log} or return ();
    my $json = JSON::PP->new;
    my @all = map { $json->decode($_) } grep { /\}\s*$/ } <$fh>;
    return defined $token ? grep { $_->{token} eq $token } @all : @all;
}

sub count {
    my ($self, $token) = @_;
    return scalar $self->pushes($token);
}

# From the access log: { nginx connection number => pushes on it }, of
# every push, or of those whose token is a key of %$tokens.
sub connections {
    my ($self, $tokens) = @_;
    open my $fh, '<', $self->{access} or return {};
    my %seen;
    for (<$fh>) {
        my ($conn, $uri) = split ' ';
        my ($token) = $uri =~ m{^/3/device/([0-9a-f]+)$} or next;
        $seen{$conn}++ if !$tokens || $tokens->{$token};
    }
    return \%seen;
}

1;
