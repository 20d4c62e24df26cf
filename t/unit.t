#!/usr/bin/perl
# Runs the C unit tests (t/c/*.c, built by `make unit` into build/unit/)
# and reports each as one test, with its failing lines as diagnostics.

use strict;
use warnings;
use FindBin;
use Test::More;

my $top = "$FindBin::Bin/..";
my @bins = grep { -x } sort glob("$top/build/unit/*");

plan skip_all => 'no unit tests built (run make unit)' unless @bins;

$ENV{MDM_VECTORS} //= "$top/../shared/vectors";
chdir $top or die "chdir $top: $!";

for my $bin (@bins) {
    my $name = $bin =~ s{.*/}{}r;
    my $out = `$bin 2>&1`;
    my $status = $? >> 8;
    my @fail = grep { /^not ok/ } split /\n/, $out;
    my ($planned) = $out =~ /^1\.\.(\d+)/m;
    my $ran = () = $out =~ /^(?:not )?ok\b/mg;

    ok($status == 0 && !@fail && defined $planned && $ran == $planned,
       "$name: $ran/" . ($planned // '?') . " passed")
        or diag(join("\n", @fail) || $out);
}

done_testing();
