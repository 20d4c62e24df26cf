
/*
 * nginx-mdm APNs push: every statement the helper task runs, in one place
 * (the table and the writers' function are in ngx_mdm_core/sql/007_push.sql).
 */


#ifndef _NGX_MDM_APNS_SQL_H_INCLUDED_
#define _NGX_MDM_APNS_SQL_H_INCLUDED_


/*
 * Claim due rows: one statement that locks them (other helpers skip them),
 * drops those that cannot be pushed, defers those pushed within the
 * coalescing window and leases the rest to us.  Rows: kind ('c' claimed,
 * 'd' deferred with its delay, 'x' dropped, 'n' when the next row not yet
 * due comes due, retries and other helpers' leases included), enrollment_id,
 * requests, attempts, topic, token (hex), push_magic, delay_ms.
 *   $1 claimer, $2 limit, $3 lease (ms), $4 coalescing window (ms)
 */
#define NGX_MDM_APNS_SQL_CLAIM                                               \
    "WITH due AS ("                                                          \
    " SELECT p.enrollment_id, e.topic, e.push_token, e.push_magic,"          \
    "  e.enabled AND e.push_token_invalid_at IS NULL"                        \
    "  AND octet_length(e.push_token) BETWEEN 1 AND 100"                     \
    "  AND e.push_magic <> '' AND e.topic <> '' AS ok,"                      \
    "  e.last_push_at + $4::float8 * interval '1 millisecond' AS quiet_at"   \
    " FROM mdm_push_requests p"                                              \
    " JOIN mdm_enrollments e ON e.id = p.enrollment_id"                      \
    " WHERE p.not_before <= now()"                                           \
    " ORDER BY p.not_before"                                                 \
    " LIMIT $2::integer"                                                     \
    " FOR UPDATE OF p SKIP LOCKED"                                           \
    "), dropped AS ("                                                        \
    " DELETE FROM mdm_push_requests p USING due d"                           \
    " WHERE p.enrollment_id = d.enrollment_id AND d.ok IS NOT TRUE"          \
    " RETURNING p.enrollment_id"                                             \
    "), deferred AS ("                                                       \
    " UPDATE mdm_push_requests p SET not_before = d.quiet_at"                \
    " FROM due d"                                                            \
    " WHERE p.enrollment_id = d.enrollment_id AND d.ok"                      \
    " AND d.quiet_at > now()"                                                \
    " RETURNING p.enrollment_id, p.not_before"                               \
    "), claimed AS ("                                                        \
    " UPDATE mdm_push_requests p"                                            \
    " SET claimed_by = $1, attempts = p.attempts + 1,"                       \
    "  not_before = now() + $3::float8 * interval '1 millisecond'"           \
    " FROM due d"                                                            \
    " WHERE p.enrollment_id = d.enrollment_id AND d.ok"                      \
    " AND (d.quiet_at IS NULL OR d.quiet_at <= now())"                       \
    " RETURNING p.enrollment_id, p.requests, p.attempts, d.topic,"           \
    "  encode(d.push_token, 'hex') AS token, d.push_magic"                   \
    ") "                                                                     \
    "SELECT 'c', enrollment_id, requests, attempts, topic, token,"           \
    " push_magic, NULL::bigint FROM claimed "                                \
    "UNION ALL "                                                             \
    "SELECT 'd', enrollment_id, NULL, NULL, NULL, NULL, NULL,"               \
    " ceil(extract(epoch FROM not_before - now()) * 1000)::bigint"           \
    " FROM deferred "                                                        \
    "UNION ALL "                                                             \
    "SELECT 'x', enrollment_id, NULL, NULL, NULL, NULL, NULL, NULL"          \
    " FROM dropped "                                                         \
    "UNION ALL "                                                             \
    "SELECT 'n', NULL, NULL, NULL, NULL, NULL, NULL,"                        \
    " ceil(extract(epoch FROM min(not_before) - now()) * 1000)::bigint"      \
    " FROM mdm_push_requests WHERE not_before > now()"


/*
 * Record a batch's answers: 200s on the enrollment (apns-id), dead tokens
 * marked, rows to retry (or requested again while in flight) released
 * with their delay, the others deleted.  Only rows we still hold are
 * touched: one whose lease ran out belongs to whoever claimed it since.
 * Gives the shortest delay of the released rows.
 *   $1 claimer, $2 JSON [{"i": id, "o": s|i|r|f, "d": detail,
 *                         "n": requests, "w": delay_ms}, ...]
 */
#define NGX_MDM_APNS_SQL_FINISH                                              \
    "WITH r AS ("                                                            \
    " SELECT * FROM json_to_recordset($2::json)"                             \
    "  AS r(i text, o text, d text, n integer, w integer)"                   \
    "), pushed AS ("                                                         \
    " UPDATE mdm_enrollments e SET"                                          \
    "  last_push_at = CASE WHEN r.o = 's' THEN now()"                        \
    "   ELSE e.last_push_at END,"                                            \
    "  last_push_id = CASE WHEN r.o = 's' THEN r.d"                          \
    "   ELSE e.last_push_id END,"                                            \
    "  last_push_error = CASE WHEN r.o = 's' THEN NULL ELSE r.d END,"        \
    "  push_token_invalid_at = CASE WHEN r.o = 'i' THEN now()"               \
    "   ELSE e.push_token_invalid_at END"                                    \
    " FROM r WHERE e.id = r.i AND r.o <> 'r'"                                \
    "), again AS ("                                                          \
    " UPDATE mdm_push_requests p"                                            \
    " SET claimed_by = NULL,"                                                \
    "  last_error = CASE WHEN r.o = 'r' THEN r.d END,"                       \
    "  attempts = CASE WHEN r.o = 's' THEN 0 ELSE p.attempts END,"           \
    "  not_before = now() + r.w::float8 * interval '1 millisecond'"          \
    " FROM r"                                                                \
    " WHERE p.enrollment_id = r.i AND p.claimed_by = $1"                     \
    " AND (r.o = 'r' OR (r.o = 's' AND p.requests <> r.n))"                  \
    " RETURNING r.w"                                                         \
    "), done AS ("                                                           \
    " DELETE FROM mdm_push_requests p USING r"                               \
    " WHERE p.enrollment_id = r.i AND p.claimed_by = $1"                     \
    " AND r.o <> 'r' AND NOT (r.o = 's' AND p.requests <> r.n)"              \
    ") "                                                                     \
    "SELECT min(w) FROM again"


/*
 * The sweep: ask for a push to every channel with pending commands that
 * has neither checked in nor been pushed for a sweep interval.
 *   $1 sweep interval (ms)
 */
#define NGX_MDM_APNS_SQL_SWEEP                                               \
    "INSERT INTO mdm_push_requests (enrollment_id) "                         \
    "SELECT e.id FROM mdm_enrollments e"                                     \
    " WHERE e.enabled AND e.push_token IS NOT NULL"                          \
    " AND e.push_token_invalid_at IS NULL"                                   \
    " AND (e.last_seen_at IS NULL"                                           \
    "  OR e.last_seen_at < now() - $1::float8 * interval '1 millisecond')"   \
    " AND (e.last_push_at IS NULL"                                           \
    "  OR e.last_push_at < now() - $1::float8 * interval '1 millisecond')"   \
    " AND EXISTS (SELECT 1 FROM mdm_queue q"                                 \
    "  WHERE q.enrollment_id = e.id AND q.status IN ('Queued', 'NotNow')) "  \
    "ON CONFLICT (enrollment_id) DO NOTHING"


#endif /* _NGX_MDM_APNS_SQL_H_INCLUDED_ */
