/* The fill pattern memdirty leaves behind and memtouch recognises as stale data. */
#define MEMDIRTY_PATTERN 0xa5a5b00b1e5a5a5aULL
