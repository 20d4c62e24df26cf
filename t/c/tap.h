
/*
 * TAP output for the C unit tests: ok() prints one test line and counts
 * failures; main() ends with printf("1..%d\n", tap_n) and returns
 * tap_failed != 0.
 */


#ifndef _MDM_TAP_H_INCLUDED_
#define _MDM_TAP_H_INCLUDED_


#include <stdarg.h>
#include <stdio.h>


static int          tap_n;
static int          tap_failed;


static int
ok(int cond, const char *fmt, ...)
{
    va_list  args;

    tap_n++;

    if (!cond) {
        tap_failed++;
    }

    printf("%sok %d - ", cond ? "" : "not ", tap_n);

    va_start(args, fmt);
    vprintf(fmt, args);
    va_end(args);

    printf("\n");

    return cond;
}


#endif /* _MDM_TAP_H_INCLUDED_ */
