/* C with xmlrpc-c (Debian libxmlrpc-core-c3-dev), its curl transport: reads <nil/>; its
 * fault strings start "RPC failed at server.  ".
 * Prints one line per step: "<step> <value>", strings as hex of their UTF-8 bytes.
 * usage: xmlrpc_c URL ADMIN_PASSWORD RUNNING DIGIT_USER DIGIT_PASSWORD NEW_USER */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xmlrpc-c/base.h>
#include <xmlrpc-c/client.h>

static xmlrpc_env env;

static void die_if_fault(const char *step) {
    if (env.fault_occurred) {
        fprintf(stderr, "%s: fault %d: %s\n", step, env.fault_code, env.fault_string);
        exit(1);
    }
}

static void print_hex(const char *step, const char *s, size_t len) {
    printf("%s ", step);
    for (size_t i = 0; i < len; i++)
        printf("%02x", (unsigned char)s[i]);
    printf("\n");
}

static void print_shown(const char *step, xmlrpc_value *v) {
    switch (xmlrpc_value_type(v)) {
    case XMLRPC_TYPE_NIL: printf("%s nil\n", step); break;
    case XMLRPC_TYPE_BOOL: { xmlrpc_bool b; xmlrpc_read_bool(&env, v, &b); printf("%s bool:%d\n", step, b); break; }
    case XMLRPC_TYPE_INT: { int i; xmlrpc_read_int(&env, v, &i); printf("%s %d\n", step, i); break; }
    default: printf("%s type:%d\n", step, xmlrpc_value_type(v));
    }
}

/* the struct's keys, sorted, joined by commas */
static void print_keys(const char *step, xmlrpc_value *st) {
    int n = xmlrpc_struct_size(&env, st);
    char **keys = calloc(n, sizeof *keys);
    for (int i = 0; i < n; i++) {
        xmlrpc_value *k, *v;
        xmlrpc_struct_read_member(&env, st, i, &k, &v);
        die_if_fault(step);
        xmlrpc_read_string(&env, k, (const char **)&keys[i]);
        xmlrpc_DECREF(k); xmlrpc_DECREF(v);
    }
    for (int i = 0; i < n; i++)       /* n is small: an insertion sort */
        for (int j = i; j > 0 && strcmp(keys[j - 1], keys[j]) > 0; j--) {
            char *t = keys[j]; keys[j] = keys[j - 1]; keys[j - 1] = t;
        }
    char buf[4096] = "";
    for (int i = 0; i < n; i++) {
        if (i) strncat(buf, ",", sizeof buf - strlen(buf) - 1);
        strncat(buf, keys[i], sizeof buf - strlen(buf) - 1);
    }
    print_hex(step, buf, strlen(buf));
}

int main(int argc, char **argv) {
    if (argc != 7) { fprintf(stderr, "usage: %s URL PASS RUNNING DIGIT_USER DIGIT_PASS NEW_USER\n", argv[0]); return 2; }
    const char *url = argv[1], *pass = argv[2], *running = argv[3];
    xmlrpc_value *r;
    xmlrpc_env_init(&env);
    xmlrpc_client_init2(&env, XMLRPC_CLIENT_NO_FLAGS, "vcd-interop", "1", NULL, 0);
    die_if_fault("init");
#define AUTH "{s:s,s:s}"
#define CALL(method, fmt, ...) xmlrpc_client_call(&env, url, method, "(" AUTH fmt ")", \
        "username", "admin", "password", pass, ##__VA_ARGS__)

    r = CALL("vcd.login", "{}"); die_if_fault("login"); print_shown("login", r); xmlrpc_DECREF(r);
    r = CALL("vcd.status", "{}"); die_if_fault("status"); print_keys("status", r); xmlrpc_DECREF(r);

    r = CALL("vxdb.list", "{s:s}", "username", ""); die_if_fault("list");
    char names[4096] = "";
    for (int i = 0, n = xmlrpc_array_size(&env, r); i < n; i++) {
        xmlrpc_value *item; const char *s;
        xmlrpc_array_read_item(&env, r, i, &item); xmlrpc_read_string(&env, item, &s);
        die_if_fault("list item");
        if (i) strncat(names, ",", sizeof names - strlen(names) - 1);
        strncat(names, s, sizeof names - strlen(names) - 1);
        free((void *)s); xmlrpc_DECREF(item);
    }
    print_hex("list", names, strlen(names)); xmlrpc_DECREF(r);

    r = CALL("vcd.user.set", "{s:s,s:s}", "username", argv[6], "password", "secret123");
    die_if_fault("void"); print_shown("void", r); xmlrpc_DECREF(r);

    r = CALL("vxdb.xid.get", "{s:s}", "name", "nosuchvserver");
    if (!env.fault_occurred) { fprintf(stderr, "no fault\n"); return 1; }
    char label[32];
    snprintf(label, sizeof label, "fault %d", env.fault_code);
    print_hex(label, env.fault_string, strlen(env.fault_string));
    xmlrpc_env_clean(&env); xmlrpc_env_init(&env);

    r = CALL("vx.exec", "{s:s,s:s}", "name", running, "command", "printf 'a\\033[1mb\\r\\nc'");
    die_if_fault("exec");
    const char *out; size_t len;
    xmlrpc_read_string_lp(&env, r, &len, &out); die_if_fault("exec string");
    print_hex("exec", out, len); free((void *)out);
    /* xmlrpc_read_string* normalise line ends (CRLF and CR become LF); the _crlf form
     * gives CRLF: what an xmlrpc-c user reads for output that had \r\n */
    xmlrpc_read_string_lp_crlf(&env, r, &len, &out); die_if_fault("exec crlf");
    print_hex("exec_crlf", out, len); free((void *)out); xmlrpc_DECREF(r);

    r = CALL("vx.exec", "{s:s,s:s,s:s}", "name", running, "encoding", "base64",
             "command", "printf 'a\\033\\r\\n\\377'");
    die_if_fault("exec raw");
    const unsigned char *bytes;
    xmlrpc_read_base64(&env, r, &len, &bytes); die_if_fault("exec raw bytes");
    print_hex("exec_raw", (const char *)bytes, len); free((void *)bytes); xmlrpc_DECREF(r);

    r = xmlrpc_client_call(&env, url, "vcd.login", "({s:s,s:s}{})", "username", argv[4],
                           "password", argv[5]);
    die_if_fault("digits"); print_shown("digits", r); xmlrpc_DECREF(r);
    r = CALL("vxdb.xid.get", "{s:i}", "name", 123); die_if_fault("xid"); print_shown("xid", r); xmlrpc_DECREF(r);

    xmlrpc_env_clean(&env);
    xmlrpc_client_cleanup();
    return 0;
}
