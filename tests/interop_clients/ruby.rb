# Ruby's XMLRPC::Client (Debian ruby-xmlrpc) with its default configuration: it cannot read
# <nil/> (only with XMLRPC::Config::ENABLE_NIL_PARSER), so it posts to /RPC2?nil=0, where
# void results are true also inside its multicall.
# Prints one line per step: "<step> <value>", strings as hex of their UTF-8 bytes.
# (with RUBY_XMLRPC_NIL=1 it sets that flag and reads <nil/> at /RPC2)
require "xmlrpc/client"

if ENV["RUBY_XMLRPC_NIL"] == "1"
  XMLRPC::Config.send(:remove_const, :ENABLE_NIL_PARSER)
  XMLRPC::Config.const_set(:ENABLE_NIL_PARSER, true)
end

url, pass, running, digit_user, digit_pass, new_user = ARGV
client = XMLRPC::Client.new2(url)
auth = { "username" => "admin", "password" => pass }

def hex_of(s) = s.b.unpack1("H*")

puts "login #{client.call('vcd.login', auth, {}).inspect}"
puts "status #{hex_of(client.call('vcd.status', auth, {}).keys.sort.join(','))}"
puts "list #{hex_of(client.call('vxdb.list', auth, { 'username' => '' }).join(','))}"
puts "void #{client.call('vcd.user.set', auth,
                         { 'username' => new_user, 'password' => 'secret123' }).inspect}"
ok, fault = client.call2("vxdb.xid.get", auth, { "name" => "nosuchvserver" })
raise "no fault: #{fault.inspect}" if ok
puts "fault #{fault.faultCode} #{hex_of(fault.faultString)}"
out = client.call("vx.exec", auth, { "name" => running, "command" => "printf 'a\\033[1mb\\r\\nc'" })
puts "exec #{hex_of(out)}"
raw = client.call("vx.exec", auth, { "name" => running, "encoding" => "base64",
                                     "command" => "printf 'a\\033\\r\\n\\377'" })
puts "exec_raw #{hex_of(raw)}"
puts "digits #{client.call('vcd.login', { 'username' => digit_user, 'password' => digit_pass }, {}).inspect}"
puts "xid #{client.call('vxdb.xid.get', auth, { 'name' => 123 }).inspect}"
# system.multicall: a fault inside comes back as an XMLRPC::FaultException in its place
results = client.multicall(["vcd.status", auth, {}],
                           ["vcd.user.set", auth, { "username" => "#{new_user}m", "password" => "secret123" }],
                           ["vxdb.xid.get", auth, { "name" => "nosuchvserver" }])
puts "multicall " + results.map { |r|
  r.is_a?(XMLRPC::FaultException) ? "fault:#{r.faultCode}" : r.is_a?(Hash) ? "struct" : r.inspect
}.join(",")
