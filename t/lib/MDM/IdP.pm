package MDM::IdP;

# A small local identity service for the SSO tests: what an OIDC or SAML
# gateway looks like to nginx's auth_request.  One Perl process, HTTP/1.1
# with one request per connection.
#
#   GET /login?user=U&password=P&rd=URL   302 to rd with a session cookie
#                                         (idp_session), or 403
#   GET /auth                             200 with "X-User: U" when the
#                                         request carries a live session
#                                         cookie or "Authorization: Bearer
#                                         <session>", else 401
#   GET /logout?session=S                 ends a session
#
# Every request is appended to idp.log in the test directory as
# "METHOD PATH STATUS USER", so that a test can see who asked what.
#
#   my $idp = MDM::IdP->new($t, users => { alice => 'wonderland' });
#   $idp->start;                          # after $t->port($idp->port)
#   ... auth_request /_idp; proxy_pass http://127.0.0.1:${\ $idp->port }

use strict;
use warnings;

use IO::Socket::IP;
use POSIX ();

sub new {
    my ($class, $t, %opts) = @_;
    return bless {
        t     => $t,
        port  => $t->port($opts{port} // 'idp'),
        users => $opts{users} // { alice => 'wonderland' },
        log   => $t->path('idp.log'),
    }, $class;
}

sub port { $_[0]{port} }

sub start {
    my ($self) = @_;
    my $t = $self->{t};

    $self->{pid} = $t->spawn(sub { $self->_serve }, log => 'idp.out');

    $t->wait_for(sub {
        IO::Socket::IP->new(PeerHost => '127.0.0.1', PeerPort => $self->{port},
                            Timeout => 1);
    }, what => 'the identity service to listen');

    return $self;
}

sub requests {
    my ($self) = @_;
    my $log = $self->{t}->read_file($self->{log}) // '';
    return split /\n/, $log;
}

sub _serve {
    my ($self) = @_;

    my $server = IO::Socket::IP->new(
        LocalHost => '127.0.0.1', LocalPort => $self->{port},
        Listen => 16, ReuseAddr => 1) or die "idp listen: $!\n";

    my %sessions;

    while (my $c = $server->accept) {
        my ($method, $path, %h);

        local $SIG{ALRM} = sub { die "timeout\n" };
        alarm 5;
        my $ok = eval {
            my $line = <$c> // die "no request\n";
            ($method, $path) = $line =~ m{^(\S+) (\S+) HTTP/} or die "bad\n";
            while (my $hl = <$c>) {
                last if $hl =~ /^\r?\n$/;
                $h{lc $1} = $2 if $hl =~ /^([^:]+):\s*(.*?)\r?$/;
            }
            1;
        };
        alarm 0;
        if (!$ok) {
            close $c;
            next;
        }

        my ($status, $user, @headers) = (404, '-');
        my ($route, $query) = split /\?/, $path, 2;
        my %q = map { my ($k, $v) = split /=/, $_, 2;
                      ($k, _unescape($v // '')) }
                split /&/, $query // '';

        if ($route eq '/login') {
            my $pw = $self->{users}{ $q{user} // '' };
            if (defined $pw && defined $q{password} && $q{password} eq $pw) {
                my $sid = join '', map { sprintf '%02x', int rand 256 } 1 .. 16;
                $sessions{$sid} = $q{user};
                ($status, $user) = (302, $q{user});
                push @headers, "Set-Cookie: idp_session=$sid; Path=/",
                               'Location: ' . ($q{rd} // '/');
            } else {
                $status = 403;
            }

        } elsif ($route eq '/auth') {
            my ($sid) = ($h{cookie} // '') =~ /(?:^|;\s*)idp_session=(\w+)/;
            ($sid) = ($h{authorization} // '') =~ /^Bearer\s+(\w+)/
                unless $sid;
            if ($sid && $sessions{$sid}) {
                ($status, $user) = (200, $sessions{$sid});
                push @headers, "X-User: $user";
            } else {
                $status = 401;
            }

        } elsif ($route eq '/logout') {
            delete $sessions{ $q{session} // '' };
            $status = 204;
        }

        my $text = { 200 => 'OK', 204 => 'No Content', 302 => 'Found',
                     401 => 'Unauthorized', 403 => 'Forbidden',
                     404 => 'Not Found' }->{$status};
        print $c "HTTP/1.1 $status $text\r\n", map({ "$_\r\n" } @headers),
                 "Content-Length: 0\r\nConnection: close\r\n\r\n";
        close $c;

        if (open my $fh, '>>', $self->{log}) {
            print $fh "$method $route $status $user\n";
            close $fh;
        }
    }

    POSIX::_exit(0);
}

sub _unescape {
    my ($s) = @_;
    $s =~ tr/+/ /;
    $s =~ s/%([0-9A-Fa-f]{2})/chr hex $1/ge;
    return $s;
}

1;
