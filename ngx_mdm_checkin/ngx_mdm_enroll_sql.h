
/*
 * nginx-mdm enrollment: the statements (ngx_mdm_enroll_sql.c).
 */


#ifndef _NGX_MDM_ENROLL_SQL_H_INCLUDED_
#define _NGX_MDM_ENROLL_SQL_H_INCLUDED_


extern const char  ngx_mdm_enroll_record_sql[];
extern const char  ngx_mdm_enroll_token_insert_sql[];
extern const char  ngx_mdm_enroll_token_use_sql[];
extern const char  ngx_mdm_enroll_identity_sql[];


#endif /* _NGX_MDM_ENROLL_SQL_H_INCLUDED_ */
