// Java with aXMLRPC (Debian libaxmlrpc-java), run by the JDK's source launcher. Without
// FLAGS_NIL it cannot read <nil/>, so it posts to /RPC2?nil=0, as its users do; with
// -Daxmlrpc.nil=true it sets FLAGS_NIL and reads <nil/> at /RPC2.
// Prints one line per step: "<step> <value>", strings as hex of their UTF-8 bytes.
// usage: java -cp axmlrpc.jar AxmlrpcClient.java URL PASS RUNNING DIGIT_USER DIGIT_PASS NEW_USER
import de.timroes.axmlrpc.XMLRPCClient;
import de.timroes.axmlrpc.XMLRPCServerException;
import java.net.URL;
import java.nio.charset.StandardCharsets;
import java.util.Arrays;
import java.util.HashMap;
import java.util.Map;
import java.util.TreeSet;

@SuppressWarnings("unchecked")
public class AxmlrpcClient {
    static String hex(String s) {
        StringBuilder out = new StringBuilder();
        for (byte b : s.getBytes(StandardCharsets.UTF_8)) out.append(String.format("%02x", b));
        return out.toString();
    }

    static Map<String, Object> struct(Object... kv) {
        Map<String, Object> m = new HashMap<>();
        for (int i = 0; i < kv.length; i += 2) m.put((String) kv[i], kv[i + 1]);
        return m;
    }

    public static void main(String[] a) throws Exception {
        XMLRPCClient client = new XMLRPCClient(new URL(a[0]),
                Boolean.getBoolean("axmlrpc.nil") ? XMLRPCClient.FLAGS_NIL : XMLRPCClient.FLAGS_NONE);
        Map<String, Object> auth = struct("username", "admin", "password", a[1]);
        System.out.println("login " + client.call("vcd.login", auth, struct()));
        Map<?, ?> status = (Map<?, ?>) client.call("vcd.status", auth, struct());
        System.out.println("status " + hex(String.join(",", new TreeSet<>((java.util.Set<String>) status.keySet()))));
        Object[] names = (Object[]) client.call("vxdb.list", auth, struct("username", ""));
        System.out.println("list " + hex(String.join(",", Arrays.stream(names).map(String::valueOf).toArray(String[]::new))));
        System.out.println("void " + client.call("vcd.user.set", auth, struct("username", a[5], "password", "secret123")));
        try {
            client.call("vxdb.xid.get", auth, struct("name", "nosuchvserver"));
            throw new IllegalStateException("no fault");
        } catch (XMLRPCServerException e) {
            System.out.println("fault " + e.getErrorNr() + " " + hex(e.getMessage()));
        }
        String out = (String) client.call("vx.exec", auth, struct("name", a[2], "command", "printf 'a\\033[1mb\\r\\nc'"));
        System.out.println("exec " + hex(out));
        byte[] raw = (byte[]) client.call("vx.exec", auth, struct("name", a[2], "encoding", "base64",
                                                                 "command", "printf 'a\\033\\r\\n\\377'"));
        StringBuilder rawHex = new StringBuilder();
        for (byte b : raw) rawHex.append(String.format("%02x", b));
        System.out.println("exec_raw " + rawHex);
        System.out.println("digits " + client.call("vcd.login", struct("username", a[3], "password", a[4]), struct()));
        System.out.println("xid " + client.call("vxdb.xid.get", auth, struct("name", 123)));
    }
}
