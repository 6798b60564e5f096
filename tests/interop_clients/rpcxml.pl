# Perl's RPC::XML::Client (Debian librpc-xml-perl): reads <nil/>; types number-like strings as
# <int> (the all-digit password, the name 123); compresses request bodies above its threshold.
# Prints one line per step: "<step> <value>", strings as hex of their UTF-8 bytes.
use strict;
use warnings;
use RPC::XML;
use RPC::XML::Client;

my ($url, $pass, $running, $digit_user, $digit_pass, $new_user) = @ARGV;
$RPC::XML::ALLOW_NIL = 1;
my $client = RPC::XML::Client->new($url);
my $auth = {username => 'admin', password => $pass};

sub hex_of { my $s = shift; utf8::encode($s) if utf8::is_utf8($s); return unpack('H*', $s) }
sub call {
    my $r = $client->send_request(@_);
    die "no answer: $r\n" unless ref $r;
    die 'fault ' . $r->value->{faultCode} . ' ' . hex_of($r->value->{faultString}) . "\n"
        if $r->is_fault;
    return $r;
}
sub shown { my $r = shift; return $r->type eq 'nil' ? 'nil' : $r->value }

print 'login ', shown(call('vcd.login', $auth, {})), "\n";
print 'status ', hex_of(join(',', sort keys %{call('vcd.status', $auth, {})->value})), "\n";
print 'list ', hex_of(join(',', @{call('vxdb.list', $auth, {username => ''})->value})), "\n";
print 'void ', shown(call('vcd.user.set', $auth, {username => $new_user, password => 'secret123'})), "\n";
eval { call('vxdb.xid.get', $auth, {name => 'nosuchvserver'}) };
print $@ =~ /^fault / ? $@ : "nofault $@\n";
print 'exec ', hex_of(call('vx.exec', $auth, {name => $running,
                                              command => "printf 'a\\033[1mb\\r\\nc'"})->value), "\n";
print 'exec_raw ', unpack('H*', call('vx.exec', $auth, {name => $running, encoding => 'base64',
                        command => "printf 'a\\033\\r\\n\\377'"})->value), "\n";
print 'digits ', shown(call('vcd.login', {username => $digit_user, password => $digit_pass}, {})), "\n";
print 'xid ', call('vxdb.xid.get', $auth, {name => '123'})->value, "\n";
# every request from here on is compressed (Content-Encoding: deflate, zlib's format)
print 'compress ', $client->compress, "\n";
$client->compress_requests(1);
$client->compress_thresh(1);
print 'compressed ', hex_of(join(',', sort keys %{call('vcd.status', $auth, {})->value})), "\n";
