# Perl's Frontier::Client (Debian libfrontier-rpc-perl): cannot read <nil/>, so it posts to
# /RPC2?nil=0; sends every number-like string as <int> (the all-digit password, the name 123).
# Prints one line per step: "<step> <value>", strings as hex of their UTF-8 bytes.
use strict;
use warnings;
use Frontier::Client;
use MIME::Base64 ();

my ($url, $pass, $running, $digit_user, $digit_pass, $new_user) = @ARGV;
my $server = Frontier::Client->new(url => $url);
my $auth = {username => 'admin', password => $pass};

sub hex_of { my $s = shift; utf8::encode($s) if utf8::is_utf8($s); return unpack('H*', $s) }
# Frontier answers a <boolean> as a Frontier::RPC2::Boolean object
sub shown { my $v = shift; return !defined $v ? 'undef' : ref $v ? ref($v) . ':' . $v->value : "$v" }

print 'login ', shown($server->call('vcd.login', $auth, {})), "\n";
my $status = $server->call('vcd.status', $auth, {});
print 'status ', hex_of(join(',', sort keys %$status)), "\n";
my $names = $server->call('vxdb.list', $auth, {username => ''});
print 'list ', hex_of(join(',', @$names)), "\n";
print 'void ', shown($server->call('vcd.user.set', $auth,
                                   {username => $new_user, password => 'secret123'})), "\n";
eval { $server->call('vxdb.xid.get', $auth, {name => 'nosuchvserver'}) };
my ($code, $text) = $@ =~ /fault code (-?\d+): (.*?)\n?$/s or die "no fault: $@";
print "fault $code ", hex_of($text), "\n";
print 'exec ', hex_of($server->call('vx.exec', $auth,
                                    {name => $running, command => "printf 'a\\033[1mb\\r\\nc'"})), "\n";
# every byte as <base64>: Frontier hands over the base64 text
my $raw = $server->call('vx.exec', $auth, {name => $running, command => "printf 'a\\033\\r\\n\\377'",
                                          encoding => 'base64'});
print 'exec_raw ', unpack('H*', MIME::Base64::decode_base64($raw->value)), "\n";
# Frontier sends these as <int>: it types every string of digits as a number
print 'digits ', shown($server->call('vcd.login', {username => $digit_user, password => $digit_pass}, {})), "\n";
print 'xid ', shown($server->call('vxdb.xid.get', $auth, {name => '123'})), "\n";
