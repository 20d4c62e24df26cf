/*
 * mdmload: a device simulator for the nginx-mdm check-in and command
 * protocol (bench/checkin/README.md).
 *
 *   mdmload gen DIR [--ca-key rsa|ec] [--server-key ec|rsa]
 *       a device CA (RSA 2048 by default, as a SCEP CA) and a server
 *       certificate for "localhost" (EC P-256 by default) in DIR
 *       (ca.pem ca.key server.pem server.key)
 *   mdmload run DIR [options]
 *       issues N device certificates from DIR/ca.key in memory, then runs
 *       the phases and prints one line of figures per phase
 *
 * One HTTP/1.1 keep-alive connection per simulated device, over mutual TLS
 * with the device's own certificate (--mode tls), or over plain HTTP with
 * the certificate in an RFC 9440 Client-Cert header (--mode forwarded: the
 * server trusts 127.0.0.1 as its load balancer).  Everything is
 * non-blocking on one epoll loop.  Every request is checked (status, body):
 * a wrong answer counts as an error.
 *
 * Phases (in this order, each optional):
 *   enroll      Authenticate + TokenUpdate of every device at --enroll-c
 *   idle        Idle polls at each concurrency of --idle-c for --seconds
 *               (closed loop: C requests in flight, devices in turn), or
 *               at --idle-rate requests per second (open loop)
 *   commands    command round trips at each concurrency of --cmd-c for
 *               --seconds: a feeder enqueues one command for each device
 *               that needs one, in batches (one transaction per batch, as
 *               the admin API does), devices send Idle -> get the command
 *               -> Acknowledged -> get an empty answer
 * --pg CONNINFO gives the database (the feeder; pg_stat_statements figures
 * when the extension is there); --cpu NAME=PID (repeatable) reports the
 * CPU of PID and its children during each phase.
 */

#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <dirent.h>
#include <time.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <libpq-fe.h>


#define MAX_CPU        8
#define RBUF          16384

enum { MODE_TLS, MODE_FORWARDED };

enum {
    ST_IDLE = 0,        /* no request */
    ST_CONNECTING,
    ST_HANDSHAKE,
    ST_WRITING,
    ST_READING
};

/* what the device is doing, for the checks */
enum {
    OP_AUTH, OP_TOKEN, OP_IDLE, OP_IDLE_CMD, OP_ACK
};


typedef struct device_s  device_t;

struct device_s {
    int            fd;
    int            state;
    int            op;
    int            busy;
    int            want_write;
    SSL           *ssl;
    X509          *cert;
    EVP_PKEY      *key;
    char           udid[48];
    char          *client_cert;     /* ":base64:" for forwarded */
    char           cmd_uuid[48];
    char          *out;
    size_t         out_len, out_off;
    char           in[RBUF];
    size_t         in_len;
    double         started;         /* of the request */
    double         trip_started;    /* of the round trip */
    int            has_cmd;         /* a command is queued (committed) */
    device_t      *next;            /* in a list */
};


typedef struct {
    double        *v;
    size_t         n, cap;
} samples_t;


static struct {
    const char    *dir;
    int            mode;
    int            rsa;         /* --device-key rsa: one RSA-2048 key */
    int            port;
    int            n;
    int            enroll_c;
    int            idle_c[8], n_idle_c;
    int            cmd_c[8], n_cmd_c;
    double         idle_rate;
    double         seconds;
    const char    *pg;
    const char    *cpu_name[MAX_CPU];
    int            cpu_pid[MAX_CPU];
    int            ncpu;
    int            batch;
    int            skip_enroll;
} opt;


static int             ep;
static SSL_CTX        *ctx;
static device_t       *devs;
static struct sockaddr_in addr;
static X509           *ca_cert;
static EVP_PKEY       *ca_key;
static char            run_id[16];
static long            errors, done_requests, done_trips;
static samples_t       lat, trip_lat;
static int             inflight;
static double          phase_end;
static int             cursor;
static device_t       *ready_head, *ready_tail;   /* command queued */
static device_t       *need_head;                  /* need one */
static int             nneed;
static long            enqueued;
static PGconn         *pg;
static int             pg_busy;
static device_t       *pg_batch;     /* being enqueued */
static int             pg_stat;      /* pg_stat_statements is there */
static unsigned long   cmd_seq;
static double          xacts0;
static long            feeds;


static void pg_wal_read(double el);
static void pg_top(void);
static void die(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));
static void start_request(device_t *d, int op);
static void dev_close(device_t *d);
static void feeder_poll(void);


static void
die(const char *fmt, ...)
{
    va_list  ap;

    va_start(ap, fmt);
    fprintf(stderr, "mdmload: ");
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n");
    ERR_print_errors_fp(stderr);
    exit(1);
}


static double
now(void)
{
    struct timespec  ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}


static void
sample(samples_t *s, double v)
{
    if (s->n == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 65536;
        s->v = realloc(s->v, s->cap * sizeof(double));
        if (s->v == NULL) {
            die("out of memory");
        }
    }

    s->v[s->n++] = v;
}


static int
cmp_double(const void *a, const void *b)
{
    double  x = *(const double *) a, y = *(const double *) b;

    return x < y ? -1 : x > y;
}


static double
pct(samples_t *s, double p)
{
    size_t  i;

    if (s->n == 0) {
        return 0;
    }

    i = (size_t) (p * (s->n - 1) + 0.5);
    return s->v[i] * 1000;
}


/* ---- certificates ------------------------------------------------------ */

static EVP_PKEY *
ec_key(void)
{
    EVP_PKEY  *k;

    k = EVP_EC_gen("P-256");
    if (k == NULL) {
        die("EC key generation failed");
    }

    return k;
}


/*
 * --device-key rsa: the devices' keys as our SCEP payload asks for them
 * (RSA 2048).  One key made once, shared by every device certificate:
 * making 5,000 would take minutes; each connection still decodes its own
 * certificate and key.
 */

static EVP_PKEY *
rsa_key(void)
{
    static EVP_PKEY  *k;

    if (k == NULL) {
        k = EVP_RSA_gen(2048);
        if (k == NULL) {
            die("RSA key generation failed");
        }
    }

    if (!EVP_PKEY_up_ref(k)) {
        die("EVP_PKEY_up_ref");
    }

    return k;
}


static void
add_ext(X509 *cert, X509 *issuer, int nid, const char *value)
{
    X509V3_CTX       v3;
    X509_EXTENSION  *ext;

    X509V3_set_ctx(&v3, issuer, cert, NULL, NULL, 0);
    ext = X509V3_EXT_conf_nid(NULL, &v3, nid, value);
    if (ext == NULL || !X509_add_ext(cert, ext, -1)) {
        die("extension %d", nid);
    }
    X509_EXTENSION_free(ext);
}


static X509 *
make_cert(const char *cn, EVP_PKEY *key, X509 *issuer, EVP_PKEY *ikey,
    int kind, long serial)
{
    X509       *x;
    X509_NAME  *name;

    x = X509_new();
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), serial);
    X509_gmtime_adj(X509_getm_notBefore(x), -3600);
    X509_gmtime_adj(X509_getm_notAfter(x), 86400L * 365);
    X509_set_pubkey(x, key);

    name = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                               (const unsigned char *) cn, -1, -1, 0);
    X509_set_issuer_name(x, issuer ? X509_get_subject_name(issuer) : name);

    if (kind == 0) {            /* CA */
        add_ext(x, x, NID_basic_constraints, "critical,CA:TRUE");
        add_ext(x, x, NID_key_usage, "critical,keyCertSign,cRLSign");
        add_ext(x, x, NID_subject_key_identifier, "hash");

    } else if (kind == 1) {     /* server */
        add_ext(x, issuer, NID_key_usage, "critical,digitalSignature");
        add_ext(x, issuer, NID_ext_key_usage, "serverAuth");
        add_ext(x, issuer, NID_subject_alt_name,
                "DNS:localhost,IP:127.0.0.1");

    } else {                    /* device */
        add_ext(x, issuer, NID_key_usage, "critical,digitalSignature");
        add_ext(x, issuer, NID_ext_key_usage, "clientAuth");
    }

    if (!X509_sign(x, ikey ? ikey : key, EVP_sha256())) {
        die("signing %s", cn);
    }

    return x;
}


static void
write_pem(const char *dir, const char *name, X509 *x, EVP_PKEY *k)
{
    FILE  *f;
    char   path[4096];

    snprintf(path, sizeof(path), "%s/%s", dir, name);
    f = fopen(path, "w");
    if (f == NULL) {
        die("%s: %s", path, strerror(errno));
    }

    if ((x && !PEM_write_X509(f, x))
        || (k && !PEM_write_PrivateKey(f, k, NULL, NULL, 0, NULL, NULL)))
    {
        die("writing %s", path);
    }

    fclose(f);
}


static void usage(void);


static EVP_PKEY *
gen_key(const char *kind)
{
    EVP_PKEY  *k;

    if (strcmp(kind, "ec") == 0) {
        return ec_key();
    }

    if (strcmp(kind, "rsa") != 0) {
        usage();
    }

    k = EVP_RSA_gen(2048);
    if (k == NULL) {
        die("RSA key generation failed");
    }

    return k;
}


static void
gen(const char *dir, const char *ca_kind, const char *srv_kind)
{
    X509      *ca, *srv;
    EVP_PKEY  *cak, *srvk;

    /*
     * The device CA: RSA 2048 by default, as a SCEP CA is (the key that
     * opens SCEP envelopes must be RSA; conf/run.sh makes the same).
     * The server's TLS key is EC P-256 (README, device-facing TLS).
     */
    cak = gen_key(ca_kind);

    ca = make_cert("mdmload device CA", cak, NULL, NULL, 0, 1);
    srvk = gen_key(srv_kind);
    srv = make_cert("localhost", srvk, ca, cak, 1, 2);

    write_pem(dir, "ca.pem", ca, NULL);
    write_pem(dir, "ca.key", NULL, cak);
    write_pem(dir, "server.pem", srv, NULL);
    write_pem(dir, "server.key", NULL, srvk);
}


static void
load_ca(const char *dir)
{
    FILE  *f;
    char   path[4096];

    snprintf(path, sizeof(path), "%s/ca.pem", dir);
    f = fopen(path, "r");
    if (f == NULL || (ca_cert = PEM_read_X509(f, NULL, NULL, NULL)) == NULL) {
        die("%s: cannot read", path);
    }
    fclose(f);

    snprintf(path, sizeof(path), "%s/ca.key", dir);
    f = fopen(path, "r");
    if (f == NULL
        || (ca_key = PEM_read_PrivateKey(f, NULL, NULL, NULL)) == NULL)
    {
        die("%s: cannot read", path);
    }
    fclose(f);
}


static void
make_devices(void)
{
    int             i, len;
    unsigned char  *der, *p;
    double          t0;

    t0 = now();
    devs = calloc(opt.n, sizeof(device_t));
    if (devs == NULL) {
        die("out of memory");
    }

    for (i = 0; i < opt.n; i++) {
        device_t  *d = &devs[i];

        d->fd = -1;
        snprintf(d->udid, sizeof(d->udid), "00008110-%s%08X", run_id, i);
        d->key = opt.rsa ? rsa_key() : ec_key();
        d->cert = make_cert(d->udid, d->key, ca_cert, ca_key, 2, 1000 + i);

        if (opt.mode == MODE_FORWARDED) {
            len = i2d_X509(d->cert, NULL);
            der = p = malloc(len);
            i2d_X509(d->cert, &p);
            d->client_cert = malloc(4 * ((len + 2) / 3) + 3);
            d->client_cert[0] = ':';
            EVP_EncodeBlock((unsigned char *) d->client_cert + 1, der, len);
            strcat(d->client_cert, ":");
            free(der);
        }
    }

    fprintf(stderr, "mdmload: %d device certificates in %.2f s\n", opt.n,
            now() - t0);
}


/* ---- CPU of the server processes -------------------------------------- */

static double
proc_ticks(int pid)
{
    FILE               *f;
    char                path[64], buf[1024], *p;
    unsigned long long  ut, st;

    snprintf(path, sizeof(path), "/proc/%d/stat", pid);
    f = fopen(path, "r");
    if (f == NULL) {
        return 0;
    }

    if (fgets(buf, sizeof(buf), f) == NULL) {
        fclose(f);
        return 0;
    }
    fclose(f);

    p = strrchr(buf, ')');
    if (p == NULL
        || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu "
                  "%llu", &ut, &st) != 2)
    {
        return 0;
    }

    return (double) (ut + st);
}


static int
proc_ppid(int pid)
{
    FILE  *f;
    char   path[64], buf[1024], *p;
    int    ppid;

    snprintf(path, sizeof(path), "/proc/%d/stat", pid);
    f = fopen(path, "r");
    if (f == NULL) {
        return -1;
    }

    if (fgets(buf, sizeof(buf), f) == NULL) {
        fclose(f);
        return -1;
    }
    fclose(f);

    p = strrchr(buf, ')');
    if (p == NULL || sscanf(p + 2, "%*c %d", &ppid) != 1) {
        return -1;
    }

    return ppid;
}


/*
 * CPU ticks of pid and its children, living or not: the children that
 * exited during a phase (a PostgreSQL backend, say) count in the parent's
 * cutime only after it reaped them, so live children are summed too.
 */
static double
tree_ticks(int root)
{
    DIR            *dir;
    struct dirent  *e;
    double          sum;
    int             pid;

    sum = proc_ticks(root);
    dir = opendir("/proc");
    if (dir == NULL) {
        return sum;
    }

    while ((e = readdir(dir)) != NULL) {
        pid = atoi(e->d_name);
        if (pid > 0 && pid != root && proc_ppid(pid) == root) {
            sum += proc_ticks(pid);
        }
    }

    closedir(dir);
    return sum;
}


static long
rss_kb(int root)
{
    FILE  *f;
    char   path[64], line[256];
    long   kb = 0;

    snprintf(path, sizeof(path), "/proc/%d/status", root);
    f = fopen(path, "r");
    if (f == NULL) {
        return 0;
    }

    while (fgets(line, sizeof(line), f)) {
        if (strncmp(line, "VmRSS:", 6) == 0) {
            kb = atol(line + 6);
        }
    }

    fclose(f);
    return kb;
}


/* largest RSS among the children of root (the nginx workers) */
static long
max_child_rss(int root)
{
    DIR            *dir;
    struct dirent  *e;
    long            max = 0, kb;
    int             pid;

    dir = opendir("/proc");
    if (dir == NULL) {
        return 0;
    }

    while ((e = readdir(dir)) != NULL) {
        pid = atoi(e->d_name);
        if (pid > 0 && proc_ppid(pid) == root) {
            kb = rss_kb(pid);
            if (kb > max) {
                max = kb;
            }
        }
    }

    closedir(dir);
    return max;
}


/* ---- PostgreSQL: the feeder and the statement counts ------------------ */

static void feeder_prepare(void);


static void
pg_open(void)
{
    PGresult  *res;

    if (opt.pg == NULL) {
        return;
    }

    pg = PQconnectdb(opt.pg);
    if (PQstatus(pg) != CONNECTION_OK) {
        die("postgres: %s", PQerrorMessage(pg));
    }

    res = PQexec(pg, "SELECT 1 FROM pg_extension "
                     "WHERE extname = 'pg_stat_statements'");
    pg_stat = PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1;
    PQclear(res);

    feeder_prepare();
}


static PGresult *
pg_exec(const char *sql)
{
    PGresult  *res;

    PQsetnonblocking(pg, 0);
    res = PQexec(pg, sql);
    PQsetnonblocking(pg, 1);

    return res;
}


/* transactions of the database so far (every round trip is one) */
static double
pg_xacts(void)
{
    PGresult  *res;
    double     n = 0;

    if (pg == NULL) {
        return 0;
    }

    PQclear(pg_exec("SELECT pg_stat_clear_snapshot()"));
    res = pg_exec("SELECT xact_commit + xact_rollback FROM pg_stat_database"
                  " WHERE datname = current_database()");
    if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1) {
        n = atof(PQgetvalue(res, 0, 0));
    }
    PQclear(res);

    return n;
}


static void
pg_stat_reset(void)
{
    if (pg_stat) {
        PQclear(pg_exec("SELECT pg_stat_statements_reset()"));
    }

    if (pg) {
        PQclear(pg_exec("SELECT pg_stat_reset_shared('wal')"));
    }
}


/* statements the server ran during the phase: top level, and all */
static void
pg_stat_read(double *top, double *all)
{
    PGresult  *res;

    *top = *all = -1;

    if (!pg_stat) {
        return;
    }

    res = pg_exec(
        "SELECT coalesce(sum(calls) FILTER (WHERE toplevel), 0),"
        " coalesce(sum(calls), 0) FROM pg_stat_statements"
        " WHERE query NOT LIKE '%pg_stat_statements%'"
        "   AND query NOT LIKE '%mdmload feeder%'"
        "   AND query NOT LIKE '%mdm_checkin_last_seen%'"
        "   AND query NOT LIKE '%last_seen_at = s.at%'"
        "   AND query NOT LIKE '%pg_extension%'"
        "   AND query NOT LIKE 'SELECT pg_notify%'"
        "   AND query NOT LIKE 'LISTEN%'");

    if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1) {
        *top = atof(PQgetvalue(res, 0, 0));
        *all = atof(PQgetvalue(res, 0, 1));
    }

    PQclear(res);
}


/* WAL flushes during the phase (pg_stat_wal, reset with the statements) */
static void
pg_wal_read(double el)
{
    PGresult  *res;

    if (pg == NULL) {
        return;
    }

    res = pg_exec("SELECT wal_sync, round(wal_sync_time::numeric, 1),"
                  " wal_bytes FROM pg_stat_wal");

    if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1) {
        printf(" wal_flushes_per_s=%.0f wal_flush_ms=%.2f wal_kb_per_s=%.0f",
               atof(PQgetvalue(res, 0, 0)) / el,
               atof(PQgetvalue(res, 0, 0)) > 0
               ? atof(PQgetvalue(res, 0, 1)) / atof(PQgetvalue(res, 0, 0))
               : 0, atof(PQgetvalue(res, 0, 2)) / 1024 / el);
    }

    PQclear(res);
}


static void
pg_top(void)
{
    PGresult  *res;

    if (!pg_stat || getenv("MDMLOAD_TOP") == NULL) {
        return;
    }

    /* where the server's time went */
    res = pg_exec("SELECT calls, round(total_exec_time::numeric, 1),"
                  " round(mean_exec_time::numeric, 3), toplevel,"
                  " left(regexp_replace(query, '\\s+', ' ', 'g'), 90)"
                  " FROM pg_stat_statements"
                  " ORDER BY total_exec_time DESC LIMIT 15");

    if (PQresultStatus(res) == PGRES_TUPLES_OK) {
        int  i;

        for (i = 0; i < PQntuples(res); i++) {
            printf("# %8s calls %9s ms %7s ms/call %s %s\n",
                   PQgetvalue(res, i, 0), PQgetvalue(res, i, 1),
                   PQgetvalue(res, i, 2), PQgetvalue(res, i, 3),
                   PQgetvalue(res, i, 4));
        }
    }

    PQclear(res);
}


/*
 * One command for each device of the list, in one statement (one
 * transaction): mdm_commands rows, then their mdm_queue rows.
 */
static const char  feeder_sql[] =
    "/* mdmload feeder */ WITH c AS ("
    " INSERT INTO mdm_commands (command_uuid, request_type, command)"
    " SELECT u, 'DeviceInformation', convert_to("
    "  '<?xml version=\"1.0\" encoding=\"UTF-8\"?>' || chr(10) ||"
    "  '<!DOCTYPE plist PUBLIC \"-//Apple//DTD PLIST 1.0//EN\" "
    "\"http://www.apple.com/DTDs/PropertyList-1.0.dtd\">' || chr(10) ||"
    "  '<plist version=\"1.0\"><dict><key>Command</key><dict>"
    "<key>Queries</key><array><string>DeviceName</string>"
    "<string>OSVersion</string></array>"
    "<key>RequestType</key><string>DeviceInformation</string></dict>"
    "<key>CommandUUID</key><string>' || u || '</string></dict></plist>'"
    "  , 'UTF8')"
    " FROM unnest($1::text[]) AS u RETURNING command_uuid)"
    " INSERT INTO mdm_queue (enrollment_id, command_uuid)"
    " SELECT d, u FROM unnest($2::text[], $1::text[]) AS t(d, u)";


/* prepared once, as the admin API's statements are */

static void
feeder_prepare(void)
{
    PGresult  *res;

    res = PQprepare(pg, "feeder", feeder_sql, 2, NULL);
    if (PQresultStatus(res) != PGRES_COMMAND_OK) {
        die("feeder: %s", PQresultErrorMessage(res));
    }
    PQclear(res);
}


static void
feeder_send(void)
{
    char        *uuids, *ids, *pu, *pi;
    const char  *values[2];
    device_t    *d;
    int          n;

    if (pg == NULL || pg_busy || need_head == NULL) {
        return;
    }

    n = nneed;
    uuids = malloc((size_t) n * 48 + 3);
    ids = malloc((size_t) n * 48 + 3);
    pu = uuids;
    pi = ids;
    *pu++ = '{';
    *pi++ = '{';

    pg_batch = need_head;
    need_head = NULL;
    nneed = 0;

    for (d = pg_batch; d; d = d->next) {
        snprintf(d->cmd_uuid, sizeof(d->cmd_uuid), "%s-%08lX-%06lX", run_id,
                 (unsigned long) (d - devs), ++cmd_seq & 0xffffff);
        pu += sprintf(pu, "%s%s", pu[-1] == '{' ? "" : ",", d->cmd_uuid);
        pi += sprintf(pi, "%s%s", pi[-1] == '{' ? "" : ",", d->udid);
    }

    strcpy(pu, "}");
    strcpy(pi, "}");
    values[0] = uuids;
    values[1] = ids;

    if (!PQsendQueryPrepared(pg, "feeder", 2, values, NULL, NULL, 0)) {
        die("feeder: %s", PQerrorMessage(pg));
    }

    PQflush(pg);
    pg_busy = 1;
    feeds++;
    free(uuids);
    free(ids);
}


static void
feeder_poll(void)
{
    PGresult  *res;
    device_t  *d, *next;
    int        ok = 1;

    if (!pg_busy) {
        return;
    }

    if (!PQconsumeInput(pg)) {
        die("feeder: %s", PQerrorMessage(pg));
    }

    while (!PQisBusy(pg)) {
        res = PQgetResult(pg);
        if (res == NULL) {
            pg_busy = 0;
            break;
        }

        if (PQresultStatus(res) != PGRES_COMMAND_OK) {
            fprintf(stderr, "mdmload: feeder: %s",
                    PQresultErrorMessage(res));
            ok = 0;
        }

        PQclear(res);
    }

    if (pg_busy) {
        return;
    }

    for (d = pg_batch; d; d = next) {
        next = d->next;
        d->next = NULL;

        if (!ok) {
            errors++;
            d->next = need_head;
            need_head = d;
            nneed++;
            continue;
        }

        enqueued++;
        d->has_cmd = 1;

        if (ready_tail) {
            ready_tail->next = d;
        } else {
            ready_head = d;
        }
        ready_tail = d;
    }

    pg_batch = NULL;
}


/* ---- HTTP ------------------------------------------------------------ */

static const char  plist_head[] =
    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
    "<!DOCTYPE plist PUBLIC \"-//Apple//DTD PLIST 1.0//EN\" "
    "\"http://www.apple.com/DTDs/PropertyList-1.0.dtd\">\n"
    "<plist version=\"1.0\">\n<dict>\n";
static const char  plist_tail[] = "</dict>\n</plist>\n";

#define TOPIC "com.apple.mgmt.External.e0bd1eac-1f17-4c8e-8a63-dd17d3dd35d9"


static void
build_request(device_t *d, int op)
{
    char         body[2048], token[64];
    const char  *ct;
    int          blen, hlen, i;
    unsigned char raw[32];

    switch (op) {

    case OP_AUTH:
        ct = "application/x-apple-aspen-mdm-checkin";
        blen = snprintf(body, sizeof(body), "%s"
            "\t<key>BuildVersion</key>\n\t<string>21E236</string>\n"
            "\t<key>MessageType</key>\n\t<string>Authenticate</string>\n"
            "\t<key>OSVersion</key>\n\t<string>17.4.1</string>\n"
            "\t<key>ProductName</key>\n\t<string>iPhone15,2</string>\n"
            "\t<key>SerialNumber</key>\n\t<string>B%s</string>\n"
            "\t<key>Topic</key>\n\t<string>" TOPIC "</string>\n"
            "\t<key>UDID</key>\n\t<string>%s</string>\n%s",
            plist_head, d->udid + 9, d->udid, plist_tail);
        break;

    case OP_TOKEN:
        ct = "application/x-apple-aspen-mdm-checkin";
        for (i = 0; i < 32; i++) {
            raw[i] = (unsigned char) (d - devs + i * 7);
        }
        EVP_EncodeBlock((unsigned char *) token, raw, 32);
        blen = snprintf(body, sizeof(body), "%s"
            "\t<key>AwaitingConfiguration</key>\n\t<false/>\n"
            "\t<key>MessageType</key>\n\t<string>TokenUpdate</string>\n"
            "\t<key>PushMagic</key>\n"
            "\t<string>5B3C1D2E-0000-4000-8000-%012lX</string>\n"
            "\t<key>Token</key>\n\t<data>%s</data>\n"
            "\t<key>Topic</key>\n\t<string>" TOPIC "</string>\n"
            "\t<key>UDID</key>\n\t<string>%s</string>\n%s",
            plist_head, (unsigned long) (d - devs), token, d->udid,
            plist_tail);
        break;

    case OP_ACK:
        ct = "application/x-apple-aspen-mdm";
        blen = snprintf(body, sizeof(body), "%s"
            "\t<key>CommandUUID</key>\n\t<string>%s</string>\n"
            "\t<key>QueryResponses</key>\n\t<dict>\n"
            "\t\t<key>DeviceName</key>\n\t\t<string>Bench iPhone</string>\n"
            "\t\t<key>OSVersion</key>\n\t\t<string>17.4.1</string>\n"
            "\t</dict>\n"
            "\t<key>Status</key>\n\t<string>Acknowledged</string>\n"
            "\t<key>UDID</key>\n\t<string>%s</string>\n%s",
            plist_head, d->cmd_uuid, d->udid, plist_tail);
        break;

    default:    /* Idle */
        ct = "application/x-apple-aspen-mdm";
        blen = snprintf(body, sizeof(body), "%s"
            "\t<key>Status</key>\n\t<string>Idle</string>\n"
            "\t<key>UDID</key>\n\t<string>%s</string>\n%s",
            plist_head, d->udid, plist_tail);
    }

    free(d->out);
    hlen = 512 + (d->client_cert ? (int) strlen(d->client_cert) : 0);
    d->out = malloc(hlen + blen);

    i = snprintf(d->out, hlen,
                 "PUT /mdm/apple/mdm HTTP/1.1\r\n"
                 "Host: localhost\r\n"
                 "User-Agent: MDM/1.0\r\n"
                 "Content-Type: %s\r\n"
                 "Content-Length: %d\r\n"
                 "%s%s%s"
                 "\r\n", ct, blen,
                 d->client_cert ? "Client-Cert: " : "",
                 d->client_cert ? d->client_cert : "",
                 d->client_cert ? "\r\n" : "");
    memcpy(d->out + i, body, blen);
    d->out_len = i + blen;
    d->out_off = 0;
}


static void
watch(device_t *d, int write)
{
    struct epoll_event  ev;

    if (d->want_write == write) {
        return;
    }

    d->want_write = write;
    ev.events = EPOLLIN | (write ? EPOLLOUT : 0);
    ev.data.ptr = d;

    if (epoll_ctl(ep, EPOLL_CTL_MOD, d->fd, &ev) < 0) {
        die("epoll_ctl: %s", strerror(errno));
    }
}


static void
dev_connect(device_t *d)
{
    struct epoll_event  ev;
    int                 one = 1;

    d->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (d->fd < 0) {
        die("socket: %s", strerror(errno));
    }

    setsockopt(d->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));

    if (connect(d->fd, (struct sockaddr *) &addr, sizeof(addr)) < 0
        && errno != EINPROGRESS)
    {
        die("connect: %s", strerror(errno));
    }

    d->state = ST_CONNECTING;
    d->want_write = 1;
    d->in_len = 0;
    ev.events = EPOLLIN | EPOLLOUT;
    ev.data.ptr = d;

    if (epoll_ctl(ep, EPOLL_CTL_ADD, d->fd, &ev) < 0) {
        die("epoll_ctl: %s", strerror(errno));
    }
}


static void
dev_close(device_t *d)
{
    if (d->ssl) {
        SSL_free(d->ssl);
        d->ssl = NULL;
    }

    if (d->fd >= 0) {
        close(d->fd);
        d->fd = -1;
    }

    d->state = ST_IDLE;
}


static void request_done(device_t *d, int status, const char *body,
    size_t len);


static void
fail(device_t *d, const char *why)
{
    static int  shown;

    if (shown++ < 10) {
        fprintf(stderr, "mdmload: %s: %s\n", d->udid, why);
    }

    dev_close(d);
    request_done(d, -1, NULL, 0);
}


/* a whole response in d->in: 1 when complete */
static int
parse_response(device_t *d)
{
    char    *end, *cl;
    int      status;
    size_t   hlen, blen;

    d->in[d->in_len] = '\0';
    end = strstr(d->in, "\r\n\r\n");
    if (end == NULL) {
        return 0;
    }

    hlen = end + 4 - d->in;
    if (sscanf(d->in, "HTTP/1.%*d %d", &status) != 1) {
        fail(d, "bad status line");
        return -1;
    }

    cl = strcasestr(d->in, "\r\nContent-Length:");
    blen = (cl && cl < end) ? (size_t) atol(cl + 17) : 0;

    if (d->in_len < hlen + blen) {
        return 0;
    }

    d->state = ST_IDLE;

    if (strcasestr(d->in, "\r\nConnection: close") != NULL) {
        dev_close(d);
    }

    d->in_len = 0;
    request_done(d, status, d->in + hlen, blen);
    return 1;
}


static void
dev_io(device_t *d, int readable)
{
    int      n, err;
    char     tmp[16];
    socklen_t sl;

    for ( ;; ) {
        switch (d->state) {

        case ST_CONNECTING:
            sl = sizeof(err);
            if (getsockopt(d->fd, SOL_SOCKET, SO_ERROR, &err, &sl) < 0
                || err)
            {
                fail(d, "connect failed");
                return;
            }

            if (opt.mode == MODE_FORWARDED) {
                d->state = ST_WRITING;
                break;
            }

            d->ssl = SSL_new(ctx);
            SSL_use_certificate(d->ssl, d->cert);
            SSL_use_PrivateKey(d->ssl, d->key);
            SSL_set_fd(d->ssl, d->fd);
            SSL_set_tlsext_host_name(d->ssl, "localhost");
            d->state = ST_HANDSHAKE;
            break;

        case ST_HANDSHAKE:
            n = SSL_connect(d->ssl);
            if (n == 1) {
                d->state = ST_WRITING;
                break;
            }

            err = SSL_get_error(d->ssl, n);
            if (err == SSL_ERROR_WANT_READ) {
                watch(d, 0);
                return;
            }
            if (err == SSL_ERROR_WANT_WRITE) {
                watch(d, 1);
                return;
            }

            fail(d, "TLS handshake failed");
            ERR_clear_error();
            return;

        case ST_WRITING:
            while (d->out_off < d->out_len) {
                if (d->ssl) {
                    n = SSL_write(d->ssl, d->out + d->out_off,
                                  d->out_len - d->out_off);
                    if (n <= 0) {
                        err = SSL_get_error(d->ssl, n);
                        if (err == SSL_ERROR_WANT_WRITE
                            || err == SSL_ERROR_WANT_READ)
                        {
                            watch(d, err == SSL_ERROR_WANT_WRITE);
                            return;
                        }
                        fail(d, "TLS write failed");
                        return;
                    }

                } else {
                    n = write(d->fd, d->out + d->out_off,
                              d->out_len - d->out_off);
                    if (n < 0) {
                        if (errno == EAGAIN) {
                            watch(d, 1);
                            return;
                        }
                        fail(d, "write failed");
                        return;
                    }
                }

                d->out_off += n;
            }

            d->state = ST_READING;
            watch(d, 0);
            break;

        case ST_READING:
            if (d->ssl) {
                n = SSL_read(d->ssl, d->in + d->in_len,
                             RBUF - 1 - d->in_len);
                if (n <= 0) {
                    err = SSL_get_error(d->ssl, n);
                    if (err == SSL_ERROR_WANT_READ) {
                        return;
                    }
                    fail(d, "TLS read failed or closed");
                    ERR_clear_error();
                    return;
                }

            } else {
                n = read(d->fd, d->in + d->in_len, RBUF - 1 - d->in_len);
                if (n < 0 && errno == EAGAIN) {
                    return;
                }
                if (n <= 0) {
                    fail(d, "connection closed");
                    return;
                }
            }

            d->in_len += n;

            if (d->in_len >= RBUF - 1) {
                fail(d, "response too large");
                return;
            }

            if (parse_response(d) != 0) {
                return;
            }
            break;

        default:
            /* keep-alive, no request: the server closed? */
            if (readable && d->fd >= 0) {
                n = d->ssl ? SSL_read(d->ssl, tmp, sizeof(tmp))
                           : read(d->fd, tmp, sizeof(tmp));
                if (n == 0 || (n < 0 && (d->ssl
                               ? SSL_get_error(d->ssl, n)
                                 != SSL_ERROR_WANT_READ
                               : errno != EAGAIN)))
                {
                    dev_close(d);
                }
            }
            return;
        }
    }
}


static void
start_request(device_t *d, int op)
{
    d->op = op;
    d->busy = 1;
    inflight++;
    build_request(d, op);
    d->started = now();

    if (d->fd < 0) {
        dev_connect(d);
        return;
    }

    d->state = ST_WRITING;
    dev_io(d, 0);
}


/* ---- phases ----------------------------------------------------------- */

static device_t *
next_device(void)
{
    int  i;

    for (i = 0; i < opt.n; i++) {
        device_t  *d = &devs[cursor];

        cursor = (cursor + 1) % opt.n;
        if (!d->busy) {
            return d;
        }
    }

    return NULL;
}


static void
need_command(device_t *d)
{
    d->has_cmd = 0;
    d->next = need_head;
    need_head = d;
    nneed++;
}


static void
finish(device_t *d)
{
    d->busy = 0;
    inflight--;
}


static void
request_done(device_t *d, int status, const char *body, size_t len)
{
    double      t, l;
    const char *p;
    int         ok;

    t = now();
    l = t - d->started;

    ok = status == 200;

    switch (d->op) {

    case OP_AUTH:
        if (ok) {
            sample(&lat, l);
            done_requests++;
            start_request(d, OP_TOKEN);
            inflight--;     /* the same slot goes on */
            return;
        }
        break;

    case OP_TOKEN:
        if (ok) {
            sample(&lat, l);
            done_requests++;
            done_trips++;
            sample(&trip_lat, t - d->trip_started);
        }
        break;

    case OP_IDLE:
        ok = ok && len == 0;
        if (ok) {
            sample(&lat, l);
            done_requests++;
        }
        break;

    case OP_IDLE_CMD:
        if (ok && len > 0) {
            p = memmem(body, len, d->cmd_uuid, strlen(d->cmd_uuid));
            if (p != NULL) {
                sample(&lat, l);
                done_requests++;
                start_request(d, OP_ACK);
                inflight--;
                return;
            }
        }
        if (status > 0 && errors < 10) {
            fprintf(stderr, "mdmload: %s: Idle got %d, %zu bytes, not %s: "
                    "%.*s\n", d->udid, status, len, d->cmd_uuid,
                    (int) len, body);
        }
        ok = 0;
        break;

    case OP_ACK:
        ok = ok && len == 0;
        if (ok) {
            sample(&lat, l);
            done_requests++;
            done_trips++;
            sample(&trip_lat, t - d->trip_started);
            need_command(d);
        }
        break;
    }

    if (!ok) {
        errors++;
        if (status > 0 && errors < 10) {
            fprintf(stderr, "mdmload: %s: op %d got status %d (%zu bytes)"
                    ": %.*s\n", d->udid, d->op, status, len, (int) len,
                    body);
        }
        if (d->op == OP_IDLE_CMD || d->op == OP_ACK) {
            need_command(d);
        }
    }

    finish(d);
}


static void
loop_once(int timeout_ms)
{
    struct epoll_event  evs[512];
    int                 n, i;
    device_t           *d;

    n = epoll_wait(ep, evs, 512, timeout_ms);

    for (i = 0; i < n; i++) {
        d = evs[i].data.ptr;

        if (d == NULL) {
            feeder_poll();
            continue;
        }

        if (d->fd < 0) {
            continue;
        }

        dev_io(d, (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) != 0);
    }
}


typedef struct {
    double  t0;
    double  cpu[MAX_CPU];
    struct rusage  ru;
} meter_t;


static void
meter_start(meter_t *m)
{
    int  i;

    for (i = 0; i < opt.ncpu; i++) {
        m->cpu[i] = tree_ticks(opt.cpu_pid[i]);
    }

    getrusage(RUSAGE_SELF, &m->ru);
    lat.n = 0;
    trip_lat.n = 0;
    errors = 0;
    done_requests = 0;
    done_trips = 0;
    pg_stat_reset();
    /* the statistics reach pg_stat_database within a second */
    if (pg) {
        usleep(1100000);
    }
    xacts0 = pg_xacts();
    feeds = 0;
    m->t0 = now();
}


static void
meter_report(meter_t *m, const char *phase, int c, const char *unit)
{
    double         el, hz, top, all, self, ticks;
    long           ops;
    struct rusage  ru;
    int            i;

    el = now() - m->t0;
    hz = sysconf(_SC_CLK_TCK);
    getrusage(RUSAGE_SELF, &ru);
    self = (ru.ru_utime.tv_sec - m->ru.ru_utime.tv_sec)
           + (ru.ru_utime.tv_usec - m->ru.ru_utime.tv_usec) / 1e6
           + (ru.ru_stime.tv_sec - m->ru.ru_stime.tv_sec)
           + (ru.ru_stime.tv_usec - m->ru.ru_stime.tv_usec) / 1e6;

    qsort(lat.v, lat.n, sizeof(double), cmp_double);
    qsort(trip_lat.v, trip_lat.n, sizeof(double), cmp_double);

    printf("RESULT phase=%s devices=%d mode=%s c=%d seconds=%.2f "
           "%s_per_s=%.0f requests_per_s=%.0f errors=%ld "
           "req_p50_ms=%.2f req_p99_ms=%.2f",
           phase, opt.n, opt.mode == MODE_TLS ? "tls" : "forwarded", c, el,
           unit, (strcmp(unit, "requests") == 0 ? done_requests
                                                  : done_trips) / el,
           done_requests / el, errors,
           pct(&lat, 0.5), pct(&lat, 0.99));

    if (trip_lat.n && strcmp(unit, "requests") != 0) {
        printf(" %s_p50_ms=%.2f %s_p99_ms=%.2f", unit, pct(&trip_lat, 0.5),
               unit, pct(&trip_lat, 0.99));
    }

    for (i = 0; i < opt.ncpu; i++) {
        ticks = tree_ticks(opt.cpu_pid[i]) - m->cpu[i];
        printf(" cpu_%s=%.0f%%", opt.cpu_name[i], 100 * ticks / hz / el);
        if (strcmp(opt.cpu_name[i], "nginx") == 0) {
            printf(" nginx_worker_rss_mb=%.1f",
                   max_child_rss(opt.cpu_pid[i]) / 1024.0);

            /* CPU per device enrolled, per request, per round trip */
            ops = strcmp(unit, "requests") == 0 ? done_requests : done_trips;
            if (ops > 0) {
                printf(" nginx_cpu_ms_per_op=%.3f", 1000 * ticks / hz / ops);
            }
        }
    }

    printf(" cpu_mdmload=%.0f%%", 100 * self / el);

    pg_stat_read(&top, &all);
    if (top >= 0 && done_requests) {
        printf(" sql_top_per_req=%.2f sql_all_per_req=%.2f",
               top / done_requests, all / done_requests);
    }

    pg_wal_read(el);

    if (pg && done_requests) {
        usleep(1100000);
        printf(" db_roundtrips_per_req=%.3f",
               (pg_xacts() - xacts0 - feeds - 6) / done_requests);
    }

    printf("\n");
    pg_top();
    fflush(stdout);
}


static void
drain(void)
{
    double  deadline = now() + 30;

    while (inflight > 0 && now() < deadline) {
        loop_once(10);
    }

    if (inflight > 0) {
        die("%d requests never answered", inflight);
    }
}


static void
phase_enroll(void)
{
    meter_t    m;
    int        next = 0;
    device_t  *d;

    meter_start(&m);

    while (next < opt.n || inflight > 0) {
        while (inflight < opt.enroll_c && next < opt.n) {
            d = &devs[next++];
            d->trip_started = now();
            start_request(d, OP_AUTH);
        }
        loop_once(10);
    }

    meter_report(&m, "enroll", opt.enroll_c, "devices");
}


static void
phase_idle(int c)
{
    meter_t    m;
    device_t  *d;

    cursor = 0;
    meter_start(&m);
    phase_end = now() + opt.seconds;

    while (now() < phase_end) {
        while (inflight < c && (d = next_device()) != NULL) {
            start_request(d, OP_IDLE);
        }
        loop_once(5);
    }

    drain();
    meter_report(&m, "idle", c, "requests");
}


/* open loop: a request every 1/rate s, to the devices in turn */
static void
phase_idle_rate(double rate)
{
    meter_t    m;
    device_t  *d;
    double     t, next;
    long       skipped = 0;
    int        i;

    /* every device connected first */
    cursor = 0;
    for (i = 0; i < opt.n; i++) {
        if (devs[i].fd < 0) {
            start_request(&devs[i], OP_IDLE);
        }
        while (inflight >= 256) {
            loop_once(5);
        }
    }
    drain();

    meter_start(&m);
    t = now();
    next = t;
    phase_end = t + opt.seconds;

    while ((t = now()) < phase_end) {
        while (next <= t) {
            d = next_device();
            if (d == NULL) {
                skipped++;
            } else {
                start_request(d, OP_IDLE);
            }
            next += 1 / rate;
        }
        loop_once(1);
    }

    drain();
    meter_report(&m, "idle-rate", (int) rate, "requests");

    if (skipped) {
        printf("# %ld requests not sent: every device busy\n", skipped);
    }
}


static void
phase_commands(int c)
{
    meter_t    m;
    device_t  *d;
    int        i;
    double     last_feed = 0, t;

    if (pg == NULL) {
        die("the commands phase needs --pg");
    }

    /* every device needs a command */
    need_head = NULL;
    nneed = 0;
    ready_head = ready_tail = NULL;
    for (i = opt.n - 1; i >= 0; i--) {
        need_command(&devs[i]);
    }

    meter_start(&m);
    phase_end = now() + opt.seconds;

    while ((t = now()) < phase_end) {
        /* a batch as soon as the previous one committed */
        if (!pg_busy && need_head
            && (nneed >= opt.batch || t - last_feed > 0.002))
        {
            feeder_send();
            last_feed = t;
        }

        while (inflight < c && ready_head) {
            d = ready_head;
            ready_head = d->next;
            if (ready_head == NULL) {
                ready_tail = NULL;
            }
            d->next = NULL;
            d->trip_started = now();
            start_request(d, OP_IDLE_CMD);
        }

        loop_once(1);
    }

    drain();

    while (pg_busy) {
        loop_once(10);
    }

    meter_report(&m, "commands", c, "round_trips");

    /* what is still queued is delivered now, so that queues end empty */
    while (ready_head) {
        d = ready_head;
        ready_head = d->next;
        d->next = NULL;
        start_request(d, OP_IDLE_CMD);
        while (inflight >= 64) {
            loop_once(5);
        }
    }
    ready_tail = NULL;
    drain();
}


static void
usage(void)
{
    fprintf(stderr,
        "usage: mdmload gen DIR [--ca-key rsa|ec] [--server-key ec|rsa]\n"
        "       mdmload run DIR --port P [--mode tls|forwarded] [-n N]\n"
        "           [--device-key ec|rsa] [--enroll-c C | --skip-enroll]\n"
        "           [--idle-c C,C...]\n"
        "           [--idle-rate R] [--cmd-c C,C...] [--seconds S]\n"
        "           [--pg CONNINFO] [--batch B] [--cpu NAME=PID]...\n");
    exit(2);
}


static int
parse_list(const char *s, int *out)
{
    int  n = 0;

    while (*s && n < 8) {
        out[n++] = atoi(s);
        s = strchr(s, ',');
        if (s == NULL) {
            break;
        }
        s++;
    }

    return n;
}


int
main(int argc, char **argv)
{
    int                 i, c;
    struct epoll_event  ev;
    struct rlimit       rl;
    unsigned char       rnd[4];

    signal(SIGPIPE, SIG_IGN);

    if (argc < 3) {
        usage();
    }

    if (strcmp(argv[1], "gen") == 0) {
        const char  *ca_kind = "rsa", *srv_kind = "ec";

        for (i = 3; i < argc; i += 2) {
            if (i + 1 == argc) {
                usage();

            } else if (strcmp(argv[i], "--ca-key") == 0) {
                ca_kind = argv[i + 1];
            } else if (strcmp(argv[i], "--server-key") == 0) {
                srv_kind = argv[i + 1];
            } else {
                usage();
            }
        }

        gen(argv[2], ca_kind, srv_kind);
        return 0;
    }

    if (strcmp(argv[1], "run") != 0) {
        usage();
    }

    opt.dir = argv[2];
    opt.n = 1000;
    opt.enroll_c = 64;
    opt.seconds = 10;
    opt.batch = 256;

    for (i = 3; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;

        if (strcmp(a, "--skip-enroll") == 0) {
            opt.skip_enroll = 1;
            continue;
        }

        if (v == NULL) {
            usage();
        }
        i++;

        if (strcmp(a, "--port") == 0) {
            opt.port = atoi(v);
        } else if (strcmp(a, "--mode") == 0) {
            opt.mode = strcmp(v, "forwarded") == 0 ? MODE_FORWARDED
                                                   : MODE_TLS;
        } else if (strcmp(a, "-n") == 0) {
            opt.n = atoi(v);
        } else if (strcmp(a, "--device-key") == 0) {
            opt.rsa = strcmp(v, "rsa") == 0;
        } else if (strcmp(a, "--enroll-c") == 0) {
            opt.enroll_c = atoi(v);
        } else if (strcmp(a, "--idle-c") == 0) {
            opt.n_idle_c = parse_list(v, opt.idle_c);
        } else if (strcmp(a, "--idle-rate") == 0) {
            opt.idle_rate = atof(v);
        } else if (strcmp(a, "--cmd-c") == 0) {
            opt.n_cmd_c = parse_list(v, opt.cmd_c);
        } else if (strcmp(a, "--seconds") == 0) {
            opt.seconds = atof(v);
        } else if (strcmp(a, "--pg") == 0) {
            opt.pg = v;
        } else if (strcmp(a, "--batch") == 0) {
            opt.batch = atoi(v);
        } else if (strcmp(a, "--cpu") == 0 && opt.ncpu < MAX_CPU
                   && strchr(v, '='))
        {
            opt.cpu_name[opt.ncpu] = strndup(v, strchr(v, '=') - v);
            opt.cpu_pid[opt.ncpu++] = atoi(strchr(v, '=') + 1);
        } else {
            usage();
        }
    }

    if (opt.port == 0 || opt.n <= 0) {
        usage();
    }

    getrlimit(RLIMIT_NOFILE, &rl);
    if (rl.rlim_cur < (rlim_t) opt.n + 64) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
        if (rl.rlim_cur < (rlim_t) opt.n + 64) {
            die("%d devices need %d file descriptors, ulimit -n is %lu",
                opt.n, opt.n + 64, (unsigned long) rl.rlim_cur);
        }
    }

    RAND_bytes(rnd, sizeof(rnd));
    snprintf(run_id, sizeof(run_id), "%02X%02X%02X%02X", rnd[0], rnd[1],
             rnd[2], rnd[3]);

    load_ca(opt.dir);
    make_devices();

    ctx = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);

    addr.sin_family = AF_INET;
    addr.sin_port = htons(opt.port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);

    ep = epoll_create1(0);

    pg_open();

    if (pg) {
        PQsetnonblocking(pg, 1);
        ev.events = EPOLLIN;
        ev.data.ptr = NULL;
        epoll_ctl(ep, EPOLL_CTL_ADD, PQsocket(pg), &ev);
    }

    if (!opt.skip_enroll) {
        phase_enroll();
    }

    for (c = 0; c < opt.n_idle_c; c++) {
        phase_idle(opt.idle_c[c]);
    }

    if (opt.idle_rate > 0) {
        phase_idle_rate(opt.idle_rate);
    }

    for (c = 0; c < opt.n_cmd_c; c++) {
        phase_commands(opt.cmd_c[c]);
    }

    return 0;
}
