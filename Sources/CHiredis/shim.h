#ifndef BITSEC_CHIREDIS_SHIM_H
#define BITSEC_CHIREDIS_SHIM_H
/* hiredis (Debian bookworm ships 0.14.1): the synchronous API only. */
#include <hiredis.h>
#include <sys/time.h>

static inline int bitsec_redis_reply_string(void) { return REDIS_REPLY_STRING; }
static inline int bitsec_redis_reply_array(void) { return REDIS_REPLY_ARRAY; }
static inline int bitsec_redis_reply_integer(void) { return REDIS_REPLY_INTEGER; }
static inline int bitsec_redis_reply_nil(void) { return REDIS_REPLY_NIL; }
static inline int bitsec_redis_reply_status(void) { return REDIS_REPLY_STATUS; }
static inline int bitsec_redis_reply_error(void) { return REDIS_REPLY_ERROR; }
static inline int bitsec_redis_ok(void) { return REDIS_OK; }

#endif
