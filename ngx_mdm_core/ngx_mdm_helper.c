
/*
 * The helper process (DESIGN.md §4).
 *
 * nginx starts it for the path that ngx_mdm_module registers with a manager
 * callback (the cache-manager mechanism), restarts it on reload, respawns it
 * when it dies and ends it on quit.  Its first manager() call renames it,
 * applies the schema migrations and then starts what the protocol modules
 * registered (APNs push, ADE sync, ...).  Every later call is a heartbeat.
 * The process may be ended at any moment, so every step is idempotent.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_event.h>
#include "ngx_mdm_core.h"


#define NGX_MDM_HELPER_TICK        1000
#define NGX_MDM_HELPER_DB_BEAT     10
#define NGX_MDM_MIGRATION_LOCK     "7169133"


typedef struct {
    ngx_int_t                  version;
    const char                *name;
    const char                *sql;
} ngx_mdm_migration_t;


#include <ngx_mdm_schema_sql.h>


static void ngx_mdm_helper_start(ngx_http_mdm_core_main_conf_t *cmcf);
static void ngx_mdm_helper_migrate(void);
static void ngx_mdm_helper_migrated(void *data, PGresult *res, ngx_int_t rc);
static void ngx_mdm_helper_retry_handler(ngx_event_t *ev);
static void ngx_mdm_helper_ready(void);
static void ngx_mdm_helper_beat(void);
static void ngx_mdm_helper_beat_done(void *data, PGresult *res,
    ngx_int_t rc);


static ngx_http_mdm_core_main_conf_t  *ngx_mdm_helper_conf;
static ngx_int_t                        ngx_mdm_helper_version = -1;
static ngx_uint_t                       ngx_mdm_helper_next;
static ngx_uint_t                       ngx_mdm_helper_is_ready;
static ngx_uint_t                       ngx_mdm_helper_beating;
static time_t                           ngx_mdm_helper_last_db_beat;
static ngx_event_t                      ngx_mdm_helper_retry;
static u_char                           ngx_mdm_helper_node[NGX_MAXHOSTNAMELEN];


static const char  ngx_mdm_helper_bootstrap_sql[] =
    "SELECT pg_advisory_xact_lock(" NGX_MDM_MIGRATION_LOCK ");"
    "CREATE TABLE IF NOT EXISTS mdm_schema_migrations ("
    "  version integer PRIMARY KEY,"
    "  name text NOT NULL,"
    "  applied_at timestamptz NOT NULL DEFAULT now());"
    "SELECT coalesce(max(version), 0) FROM mdm_schema_migrations";

static const char  ngx_mdm_helper_beat_sql[] =
    "INSERT INTO mdm_helpers (node, pid) VALUES ($1, $2) "
    "ON CONFLICT (node) DO UPDATE SET pid = $2, heartbeat_at = now(), "
    "started_at = CASE WHEN mdm_helpers.pid = $2 "
    "THEN mdm_helpers.started_at ELSE now() END";


ngx_int_t
ngx_mdm_helper_register(ngx_conf_t *cf, ngx_mdm_helper_init_pt init)
{
    ngx_mdm_helper_init_pt         *p;
    ngx_http_mdm_core_main_conf_t  *cmcf;

    cmcf = ngx_http_conf_get_module_main_conf(cf, ngx_mdm_module);

    p = ngx_array_push(&cmcf->helper_inits);
    if (p == NULL) {
        return NGX_ERROR;
    }

    *p = init;

    return NGX_OK;
}


ngx_int_t
ngx_mdm_helper_schema_ready(void)
{
    return ngx_mdm_helper_is_ready;
}


ngx_msec_t
ngx_mdm_helper_manager(void *data)
{
    ngx_http_mdm_core_main_conf_t  *cmcf = data;

    if (ngx_mdm_helper_conf == NULL) {
        ngx_mdm_helper_start(cmcf);
    }

    ngx_mdm_helper_beat();

    return NGX_MDM_HELPER_TICK;
}


static void
ngx_mdm_helper_start(ngx_http_mdm_core_main_conf_t *cmcf)
{
    ngx_mdm_helper_conf = cmcf;

    (void) ngx_cpystrn(ngx_mdm_helper_node, ngx_cycle->hostname.data,
                       ngx_min(ngx_cycle->hostname.len + 1,
                               NGX_MAXHOSTNAMELEN));

    ngx_setproctitle("mdm helper process");

    ngx_log_error(NGX_LOG_NOTICE, ngx_cycle->log, 0,
                  "mdm helper process started");

    ngx_mdm_helper_retry.handler = ngx_mdm_helper_retry_handler;
    ngx_mdm_helper_retry.log = ngx_cycle->log;
    ngx_mdm_helper_retry.cancelable = 1;

    if (cmcf->migrate) {
        ngx_mdm_helper_migrate();

    } else {
        ngx_mdm_helper_ready();
    }
}


/*
 * Migrations: first the version table (created under the advisory lock),
 * then every migration in order as one implicit transaction that takes the
 * lock, records its version and runs its SQL.  One already applied (by
 * this node earlier, or by another node that won the race) fails at once
 * on the version's primary key and is skipped, so a migration added with a
 * lower number than one applied still runs.
 */

static void
ngx_mdm_helper_migrate(void)
{
    u_char                     *sql;
    size_t                      len;
    ngx_mdm_pg_args_t           args;
    const ngx_mdm_migration_t  *m;

    ngx_memzero(&args, sizeof(ngx_mdm_pg_args_t));
    args.simple = 1;
    args.handler = ngx_mdm_helper_migrated;
    args.log = ngx_cycle->log;

    if (ngx_mdm_helper_version < 0) {
        args.sql = ngx_mdm_helper_bootstrap_sql;
        args.data = NULL;

        if (ngx_mdm_pg_query(&args) == NULL) {
            ngx_add_timer(&ngx_mdm_helper_retry, 1000);
        }
        return;
    }

    m = &ngx_mdm_migrations[ngx_mdm_helper_next];

    if (m->name == NULL) {
        ngx_mdm_helper_ready();
        return;
    }

    len = sizeof("SELECT pg_advisory_xact_lock();"
                 "INSERT INTO mdm_schema_migrations (version, name) "
                 "VALUES (, '');") + sizeof(NGX_MDM_MIGRATION_LOCK)
          + NGX_INT_T_LEN + ngx_strlen(m->name) + ngx_strlen(m->sql);

    sql = ngx_alloc(len, ngx_cycle->log);
    if (sql == NULL) {
        ngx_add_timer(&ngx_mdm_helper_retry, 1000);
        return;
    }

    (void) ngx_sprintf(sql, "SELECT pg_advisory_xact_lock("
                    NGX_MDM_MIGRATION_LOCK ");"
                    "INSERT INTO mdm_schema_migrations (version, name) "
                    "VALUES (%i, '%s');%s%Z", m->version, m->name, m->sql);

    args.sql = (char *) sql;
    args.data = (void *) m;

    if (ngx_mdm_pg_query(&args) == NULL) {
        ngx_add_timer(&ngx_mdm_helper_retry, 1000);
    }

    ngx_free(sql);
}


static void
ngx_mdm_helper_migrated(void *data, PGresult *res, ngx_int_t rc)
{
    char                       *state;
    const ngx_mdm_migration_t  *m = data;

    if (rc == NGX_DECLINED) {
        ngx_add_timer(&ngx_mdm_helper_retry, 1000);
        return;
    }

    if (rc == NGX_ERROR) {
        state = PQresultErrorField(res, PG_DIAG_SQLSTATE);

        if (m && state && ngx_strcmp(state, "23505") == 0) {
            /* applied before */
            ngx_mdm_helper_next++;
            ngx_mdm_helper_version = ngx_max(ngx_mdm_helper_version,
                                             m->version);
            ngx_mdm_helper_migrate();
            return;
        }

        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                      "mdm schema migration %s failed: %s",
                      m ? m->name : "bootstrap", PQresultErrorMessage(res));
        ngx_add_timer(&ngx_mdm_helper_retry, 5000);
        return;
    }

    if (m == NULL) {
        ngx_mdm_helper_version = ngx_atoi((u_char *) PQgetvalue(res, 0, 0),
                                          PQgetlength(res, 0, 0));

    } else {
        ngx_log_error(NGX_LOG_NOTICE, ngx_cycle->log, 0,
                      "mdm schema migration %s applied", m->name);
        ngx_mdm_helper_next++;
        ngx_mdm_helper_version = ngx_max(ngx_mdm_helper_version,
                                         m->version);
    }

    ngx_mdm_helper_migrate();
}


static void
ngx_mdm_helper_retry_handler(ngx_event_t *ev)
{
    ngx_mdm_helper_migrate();
}


static void
ngx_mdm_helper_ready(void)
{
    ngx_uint_t               i;
    ngx_mdm_helper_init_pt  *init;

    if (ngx_mdm_helper_is_ready) {
        return;
    }

    ngx_mdm_helper_is_ready = 1;

    if (ngx_mdm_shm() && ngx_mdm_helper_version >= 0) {
        ngx_mdm_shm()->schema_version = ngx_mdm_helper_version;
    }

    ngx_log_error(NGX_LOG_NOTICE, ngx_cycle->log, 0,
                  "mdm schema version %i ready", ngx_mdm_helper_version);

    init = ngx_mdm_helper_conf->helper_inits.elts;

    for (i = 0; i < ngx_mdm_helper_conf->helper_inits.nelts; i++) {
        if (init[i]((ngx_cycle_t *) ngx_cycle) != NGX_OK) {
            ngx_log_error(NGX_LOG_ALERT, ngx_cycle->log, 0,
                          "mdm helper task %ui failed to start", i);
        }
    }
}


/*
 * The heartbeat: this node's shared memory every tick (read by the status
 * location), PostgreSQL every few ticks so that other nodes see us too.
 */

static void
ngx_mdm_helper_beat(void)
{
    u_char              pid[NGX_INT_T_LEN + 1];
    const char         *values[2];
    ngx_mdm_pg_args_t   args;

    if (ngx_mdm_shm()) {
        ngx_mdm_shm()->helper_heartbeat = ngx_time();
        ngx_mdm_shm()->helper_pid = ngx_pid;
    }

    if (!ngx_mdm_helper_is_ready || ngx_mdm_helper_beating
        || ngx_time() - ngx_mdm_helper_last_db_beat < NGX_MDM_HELPER_DB_BEAT)
    {
        return;
    }

    *ngx_sprintf(pid, "%P", ngx_pid) = '\0';
    values[0] = (char *) ngx_mdm_helper_node;
    values[1] = (char *) pid;

    ngx_memzero(&args, sizeof(ngx_mdm_pg_args_t));
    args.sql = ngx_mdm_helper_beat_sql;
    args.nparams = 2;
    args.values = values;
    args.handler = ngx_mdm_helper_beat_done;
    args.log = ngx_cycle->log;

    if (ngx_mdm_pg_query(&args)) {
        ngx_mdm_helper_beating = 1;
        ngx_mdm_helper_last_db_beat = ngx_time();
    }
}


static void
ngx_mdm_helper_beat_done(void *data, PGresult *res, ngx_int_t rc)
{
    ngx_mdm_helper_beating = 0;

    if (rc == NGX_ERROR) {
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                      "mdm helper heartbeat failed: %s",
                      PQresultErrorMessage(res));
    }
}
