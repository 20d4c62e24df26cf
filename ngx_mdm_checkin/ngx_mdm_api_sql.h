
/*
 * nginx-mdm admin API: every statement it runs, in one place.
 *
 * Each request is one statement, one round trip.  ID lists travel as one
 * text[] parameter and are joined FROM unnest($1::text[]), so that 100,000
 * IDs cost one parameter, not 100,000.  Times are RFC 3339 UTC text made by
 * mdm_api_time(), enrollments JSON made by mdm_api_enrollment()
 * (ngx_mdm_core/sql/008_api.sql).  A command's status reads "Expired" once
 * its expires_at has passed while it was still pending.
 */


#ifndef _NGX_MDM_API_SQL_H_INCLUDED_
#define _NGX_MDM_API_SQL_H_INCLUDED_


#define NGX_MDM_API_PENDING   "('Queued', 'NotNow')"

#define NGX_MDM_API_STATUS(q, c)                                             \
    "CASE WHEN " q ".status IN " NGX_MDM_API_PENDING                         \
    " AND " c ".expires_at <= now() THEN 'Expired' ELSE " q ".status END"


/*
 * Enqueue: the command, its queue rows for the IDs that exist, the push
 * requests (007_push.sql's mdm_push_request()), in one statement, the
 * queue rows in key order (their indexes fill in order, a third faster
 * than in request order).  Nothing is written when no ID exists.  Rows:
 * queued, pushed, and one unknown ID per row (NULL when every ID was
 * known; the unknown ones are looked for only when some are missing).
 *   $1 ids text[] (distinct), $2 command_uuid, $3 request_type, $4 command
 *   (bytea, binary), $5 priority, $6 expires_at, $7 push, $8 count of $1
 */
#define NGX_MDM_API_SQL_ENQUEUE                                              \
    "WITH ids AS ("                                                          \
    " SELECT i.id FROM unnest($1::text[]) AS i(id)"                          \
    "), cmd AS ("                                                            \
    " INSERT INTO mdm_commands"                                              \
    "  (command_uuid, request_type, command, priority, expires_at)"          \
    " SELECT $2, $3, $4::bytea, $5::integer, $6::timestamptz"                \
    " WHERE EXISTS (SELECT 1 FROM ids JOIN mdm_enrollments e"                \
    "  ON e.id = ids.id)"                                                    \
    " RETURNING command_uuid, priority"                                      \
    "), queued AS ("                                                         \
    " INSERT INTO mdm_queue (enrollment_id, command_uuid, priority)"         \
    " SELECT e.id, cmd.command_uuid, cmd.priority"                           \
    " FROM cmd, ids JOIN mdm_enrollments e ON e.id = ids.id"                 \
    " ORDER BY e.id"                                                         \
    " RETURNING enrollment_id"                                               \
    "), pushed AS ("                                                         \
    " SELECT mdm_push_request(array_agg(enrollment_id)) AS n"                \
    " FROM queued WHERE $7::boolean"                                         \
    ")"                                                                      \
    " SELECT q.n::text, coalesce(p.n, 0)::text, u.id"                        \
    " FROM (SELECT count(*) AS n FROM queued) AS q CROSS JOIN pushed AS p"   \
    " LEFT JOIN LATERAL"                                                     \
    " (SELECT id FROM ids WHERE q.n < $8::integer"                           \
    "  EXCEPT SELECT enrollment_id FROM queued WHERE q.n < $8::integer)"     \
    " AS u ON true"


/*
 * A command, its counts by status (computed once: a LATERAL on the one
 * command row) and one page of its deliveries by enrollment ID (found by
 * mdm_queue_command, then a top-N sort: about 0.1 s for a page of a
 * 100,000-enrollment command; an index on (command_uuid, enrollment_id)
 * would avoid the sort but costs every enqueue 0.1-0.2 s per 100,000
 * rows).  Binary results (the result column is bytea).  No row: unknown
 * command.
 *   $1 command_uuid, $2 after (enrollment ID or NULL), $3 limit,
 *   $4 only this enrollment (or NULL)
 */
#define NGX_MDM_API_SQL_COMMAND                                              \
    "SELECT c.request_type, mdm_api_time(c.created_at),"                     \
    " mdm_api_time(c.expires_at), c.priority::text, s.counts,"               \
    " q.enrollment_id, " NGX_MDM_API_STATUS("q", "c") ","                    \
    " mdm_api_time(q.queued_at), mdm_api_time(q.sent_at),"                   \
    " q.sent_count::text, q.not_now_tally::text,"                            \
    " mdm_api_time(q.updated_at), q.result"                                  \
    " FROM mdm_commands c CROSS JOIN LATERAL"                                \
    " (SELECT coalesce(json_object_agg(t.status, t.n), '{}')::text"          \
    "  AS counts FROM"                                                       \
    "  (SELECT " NGX_MDM_API_STATUS("x", "c") " AS status, count(*) AS n"    \
    "   FROM mdm_queue x WHERE x.command_uuid = c.command_uuid"              \
    "   GROUP BY 1) AS t) AS s"                                              \
    " LEFT JOIN LATERAL"                                                     \
    " (SELECT * FROM mdm_queue q WHERE q.command_uuid = c.command_uuid"      \
    "  AND ($2::text IS NULL OR q.enrollment_id > $2::text)"                 \
    "  AND ($4::text IS NULL OR q.enrollment_id = $4::text)"                 \
    "  ORDER BY q.enrollment_id LIMIT $3::integer) AS q ON true"             \
    " WHERE c.command_uuid = $1"                                             \
    " ORDER BY q.enrollment_id"


/* cancel a command's pending deliveries: exists (0/1), cancelled */
#define NGX_MDM_API_SQL_COMMAND_CANCEL                                       \
    "WITH c AS (SELECT command_uuid FROM mdm_commands"                       \
    " WHERE command_uuid = $1"                                               \
    "), u AS ("                                                              \
    " UPDATE mdm_queue q SET status = 'Cancelled', updated_at = now()"       \
    " FROM c WHERE q.command_uuid = c.command_uuid"                          \
    " AND q.status IN " NGX_MDM_API_PENDING                                  \
    " RETURNING 1"                                                           \
    ")"                                                                      \
    " SELECT (SELECT count(*) FROM c)::text, (SELECT count(*) FROM u)::text"


/* the device's report, raw (binary results): result, status */
#define NGX_MDM_API_SQL_RESULT                                               \
    "SELECT q.result, q.status FROM mdm_queue q"                             \
    " WHERE q.command_uuid = $1 AND q.enrollment_id = $2"


/*
 * One page of enrollments by ID.
 *   $1 after, $2 limit, $3 device_id, $4 serial_number, $5 channel,
 *   $6 enabled, $7 udid
 */
#define NGX_MDM_API_SQL_ENROLLMENTS                                          \
    "SELECT e.id, mdm_api_enrollment(e)::text FROM mdm_enrollments e"        \
    " WHERE ($1::text IS NULL OR e.id > $1::text)"                           \
    " AND ($3::text IS NULL OR e.device_id = $3::text)"                      \
    " AND ($4::text IS NULL OR e.serial_number = $4::text)"                  \
    " AND ($5::text IS NULL OR e.channel = $5::text)"                        \
    " AND ($6::boolean IS NULL OR e.enabled = $6::boolean)"                  \
    " AND ($7::text IS NULL OR e.udid = $7::text)"                           \
    " ORDER BY e.id LIMIT $2::integer"


/*
 * One enrollment, its user channels (for a device channel) and the
 * certificates bound to its device channel.  $1 id
 */
#define NGX_MDM_API_SQL_ENROLLMENT                                           \
    "SELECT mdm_api_enrollment(e)::text,"                                    \
    " (SELECT coalesce(json_agg(u.id ORDER BY u.id), '[]')"                  \
    "  FROM mdm_enrollments u"                                               \
    "  WHERE u.device_id = e.id AND u.id <> e.id)::text,"                    \
    " (SELECT coalesce(json_agg(json_build_object("                          \
    "   'serial', c.serial, 'subject', c.subject,"                           \
    "   'not_before', mdm_api_time(c.not_before),"                           \
    "   'not_after', mdm_api_time(c.not_after),"                             \
    "   'revoked_at', mdm_api_time(c.revoked_at))"                           \
    "   ORDER BY c.not_after DESC), '[]')"                                   \
    "  FROM mdm_cert_bindings b JOIN mdm_certificates c"                     \
    "  ON c.sha256 = b.sha256 WHERE b.enrollment_id = e.device_id)::text"    \
    " FROM mdm_enrollments e WHERE e.id = $1"


/*
 * One page of an enrollment's queue, in the order the device gets it.
 * One row with NULL command when the queue page is empty; no row: unknown
 * enrollment.
 *   $1 enrollment id, $2 all (not only pending), $3 after command_uuid,
 *   $4 limit
 */
#define NGX_MDM_API_SQL_QUEUE                                                \
    "SELECT q.command_uuid, c.request_type,"                                 \
    " " NGX_MDM_API_STATUS("q", "c") ", q.priority::text,"                   \
    " mdm_api_time(q.queued_at), mdm_api_time(q.sent_at),"                   \
    " q.sent_count::text, q.not_now_tally::text,"                            \
    " mdm_api_time(q.updated_at), mdm_api_time(c.expires_at)"                \
    " FROM mdm_enrollments e LEFT JOIN LATERAL"                              \
    " (SELECT q.* FROM mdm_queue q WHERE q.enrollment_id = e.id"             \
    "  AND ($2::boolean OR q.status IN " NGX_MDM_API_PENDING ")"             \
    "  AND ($3::text IS NULL OR"                                             \
    "   (-q.priority, q.queued_at, q.command_uuid) >"                        \
    "   (SELECT -p.priority, p.queued_at, p.command_uuid FROM mdm_queue p"   \
    "    WHERE p.enrollment_id = e.id AND p.command_uuid = $3::text))"       \
    "  ORDER BY q.priority DESC, q.queued_at, q.command_uuid"                \
    "  LIMIT $4::integer) AS q ON true"                                      \
    " LEFT JOIN mdm_commands c ON c.command_uuid = q.command_uuid"           \
    " WHERE e.id = $1"                                                       \
    " ORDER BY q.priority DESC, q.queued_at, q.command_uuid"


/* clear an enrollment's queue: exists (0/1), cancelled.  $1 id */
#define NGX_MDM_API_SQL_QUEUE_CLEAR                                          \
    "WITH e AS (SELECT id FROM mdm_enrollments WHERE id = $1"                \
    "), u AS ("                                                              \
    " UPDATE mdm_queue q SET status = 'Cancelled', updated_at = now()"       \
    " FROM e WHERE q.enrollment_id = e.id"                                   \
    " AND q.status IN " NGX_MDM_API_PENDING                                  \
    " RETURNING 1"                                                           \
    ")"                                                                      \
    " SELECT (SELECT count(*) FROM e)::text, (SELECT count(*) FROM u)::text"


/*
 * Cancel one queued command of an enrollment: its status before, and
 * whether it was cancelled.  No row: no such queue entry.
 *   $1 enrollment id, $2 command_uuid
 */
#define NGX_MDM_API_SQL_QUEUE_CANCEL                                         \
    "WITH u AS ("                                                            \
    " UPDATE mdm_queue SET status = 'Cancelled', updated_at = now()"         \
    " WHERE enrollment_id = $1 AND command_uuid = $2"                        \
    " AND status IN " NGX_MDM_API_PENDING                                    \
    " RETURNING 1"                                                           \
    ")"                                                                      \
    " SELECT q.status, (SELECT count(*) FROM u)::text FROM mdm_queue q"      \
    " WHERE q.enrollment_id = $1 AND q.command_uuid = $2"


/*
 * Push now: push requests for the channels that can be pushed (the same
 * test as mdm_push_request()), and why the others cannot.  Rows: pushed,
 * then one failed ID and its reason per row (NULL when none failed).
 *   $1 ids text[]
 */
#define NGX_MDM_API_SQL_PUSH                                                 \
    "WITH e AS ("                                                            \
    " SELECT i.id, CASE"                                                     \
    "  WHEN e.id IS NULL THEN 'unknown enrollment'"                          \
    "  WHEN NOT e.enabled THEN 'enrollment disabled'"                        \
    "  WHEN e.push_token IS NULL THEN 'no push token'"                       \
    "  WHEN e.push_token_invalid_at IS NOT NULL THEN 'push token invalid'"   \
    "  END AS error"                                                         \
    " FROM unnest($1::text[]) AS i(id)"                                      \
    " LEFT JOIN mdm_enrollments e ON e.id = i.id"                            \
    "), p AS ("                                                              \
    " SELECT mdm_push_request(array_agg(id)) AS n FROM e"                    \
    " WHERE error IS NULL"                                                   \
    ")"                                                                      \
    " SELECT coalesce((SELECT n FROM p), 0)::text, f.id, f.error"            \
    " FROM (VALUES (1)) AS one(x) LEFT JOIN e AS f ON f.error IS NOT NULL"


/*
 * Revoke certificates by serial ($1 bigint[]) and by enrollment ($2
 * text[]: the certificates bound to its device channel), reason $3.
 * Rows: kind ('s' serial, 'e' enrollment), the serial or ID asked for,
 * a certificate serial (NULL if none), its revoked_at, revoked now,
 * known (the serial or enrollment exists).
 */
#define NGX_MDM_API_SQL_REVOKE                                               \
    "WITH s AS ("                                                            \
    " SELECT x AS serial FROM unnest($1::bigint[]) AS x"                     \
    "), e AS ("                                                              \
    " SELECT i.id, (en.id IS NOT NULL OR b.sha256 IS NOT NULL) AS known,"    \
    "  b.sha256"                                                             \
    " FROM unnest($2::text[]) AS i(id)"                                      \
    " LEFT JOIN mdm_enrollments en ON en.id = i.id"                          \
    " LEFT JOIN mdm_cert_bindings b"                                         \
    "  ON b.enrollment_id = coalesce(en.device_id, i.id)"                    \
    "), t AS ("                                                              \
    " SELECT c.serial FROM mdm_certificates c JOIN s ON s.serial = c.serial" \
    " UNION"                                                                 \
    " SELECT c.serial FROM mdm_certificates c JOIN e ON e.sha256 = c.sha256" \
    "), r AS ("                                                              \
    " UPDATE mdm_certificates c SET revoked_at = now(),"                     \
    "  revocation_reason = $3::integer"                                      \
    " FROM t WHERE c.serial = t.serial AND c.revoked_at IS NULL"             \
    " RETURNING c.serial, c.revoked_at"                                      \
    ")"                                                                      \
    " SELECT 's', s.serial::text, c.serial::text,"                           \
    " mdm_api_time(coalesce(r.revoked_at, c.revoked_at)),"                   \
    " r.serial IS NOT NULL, c.serial IS NOT NULL"                            \
    " FROM s LEFT JOIN mdm_certificates c ON c.serial = s.serial"            \
    " LEFT JOIN r ON r.serial = s.serial"                                    \
    " UNION ALL"                                                             \
    " SELECT 'e', e.id, c.serial::text,"                                     \
    " mdm_api_time(coalesce(r.revoked_at, c.revoked_at)),"                   \
    " r.serial IS NOT NULL, e.known"                                         \
    " FROM e LEFT JOIN mdm_certificates c ON c.sha256 = e.sha256"            \
    " LEFT JOIN r ON r.serial = c.serial"


#endif /* _NGX_MDM_API_SQL_H_INCLUDED_ */
