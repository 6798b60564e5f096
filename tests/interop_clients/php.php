<?php
// PHP's xmlrpc extension (Debian php-xmlrpc) the way a web panel uses it: requests built with
// xmlrpc_encode_request, posted with a stream context, answers read with xmlrpc_decode.
// It can only send array() where the params struct is empty, and a panel's ids are ints.
// Prints one line per step: "<step> <value>", strings as hex of their UTF-8 bytes.
[$self, $url, $pass, $running, $digit_user, $digit_pass, $new_user] = $argv;
$auth = ['username' => 'admin', 'password' => $pass];

function call(string $url, string $method, array $params, bool $gzip = false)
{
    $body = xmlrpc_encode_request($method, $params, ['encoding' => 'UTF-8', 'escaping' => 'markup']);
    $headers = "Content-Type: text/xml\r\n";
    if ($gzip) {
        $body = gzencode($body);
        $headers .= "Content-Encoding: gzip\r\n";
    }
    $context = stream_context_create(['http' => [
        'method' => 'POST', 'header' => $headers, 'content' => $body, 'ignore_errors' => true]]);
    $answer = file_get_contents($url, false, $context);
    if ($answer === false) {
        throw new RuntimeException("$method: no answer");
    }
    $value = xmlrpc_decode($answer, 'UTF-8');
    if ($value === null && strpos($answer, '<nil/>') === false) {
        throw new RuntimeException("$method: cannot decode " . bin2hex($answer));
    }
    return $value;
}
function shown($v): string { return var_export($v, true); }
function keys_of(array $status): string { $k = array_keys($status); sort($k); return bin2hex(implode(',', $k)); }

echo 'login ', shown(call($url, 'vcd.login', [$auth, []])), "\n";
// array() is all the extension can send for "no params": it goes out as an empty <array>
$empty = xmlrpc_encode_request('vcd.status', [[]]);
echo 'empty_params ', strpos($empty, '<array>') !== false && strpos($empty, '<struct>') === false ? 'array' : 'other', "\n";
echo 'status ', keys_of(call($url, 'vcd.status', [$auth, []])), "\n";
echo 'list ', bin2hex(implode(',', call($url, 'vxdb.list', [$auth, ['username' => '']]))), "\n";
echo 'void ', shown(call($url, 'vcd.user.set', [$auth, ['username' => $new_user, 'password' => 'secret123']])), "\n";
$fault = call($url, 'vxdb.xid.get', [$auth, ['name' => 'nosuchvserver']]);
if (!is_array($fault) || !xmlrpc_is_fault($fault)) {
    throw new RuntimeException('no fault: ' . shown($fault));
}
echo 'fault ', $fault['faultCode'], ' ', bin2hex($fault['faultString']), "\n";
$out = call($url, 'vx.exec', [$auth, ['name' => $running, 'command' => "printf 'a\\033[1mb\\r\\nc'"]]);
echo 'exec ', bin2hex($out), "\n";
// a <base64> answer decodes to an object whose scalar holds the bytes
$raw = call($url, 'vx.exec', [$auth, ['name' => $running, 'encoding' => 'base64',
                                      'command' => "printf 'a\\033\\r\\n\\377'"]]);
echo 'exec_raw ', bin2hex($raw->scalar), "\n";
echo 'digits ', shown(call($url, 'vcd.login', [['username' => $digit_user, 'password' => $digit_pass], []])), "\n";
echo 'xid ', shown(call($url, 'vxdb.xid.get', [$auth, ['name' => 123]])), "\n";
echo 'compressed ', keys_of(call($url, 'vcd.status', [$auth, []], true)), "\n";
