/* The layout table the library reports (edge_tick_layout): every struct of tick.h with its
 * sizeof, every field with its offsetof, sizeof and kind, every limit with its value, made
 * from tick.h's lists, so that nothing declared there is left out. The binding compares it
 * with its own declaration when it loads the library and refuses any difference (an
 * "unavailable" reason: the group steps with numpy and says why) instead of passing structs
 * the library would read at other offsets. */
#include <stddef.h>

#include "tick.h"

/* A field's kind: 'i' int64_t, 'f' double, 'p' anything else (tick.h's fields are those three;
 * the binding checks the size too, so a field of another type is refused, not misread). */
#define KIND(lvalue) _Generic((lvalue), int64_t: 'i', double: 'f', default: 'p')
#define ENTRY(st, field)                                                                  \
    {#st "." #field, KIND(((st *)0)->field), (int64_t)offsetof(st, field),                \
     (int64_t)sizeof(((st *)0)->field)},
#define STRUCT(st) {#st, 's', (int64_t)sizeof(st), (int64_t)sizeof(st)},
#define SPARSE_B_ENTRY(type, field) ENTRY(sparse_b, field)
#define MODEL_ENTRY(type, field) ENTRY(tick_model, field)
#define STATE_ENTRY(type, field) ENTRY(tick_state, field)
#define LIMIT_ENTRY(name, value) {#name, 'l', (value), 0},

static const tick_layout_entry LAYOUT[] = {
    STRUCT(sparse_b) TICK_SPARSE_B_FIELDS(SPARSE_B_ENTRY)
    STRUCT(tick_model) TICK_MODEL_FIELDS(MODEL_ENTRY)
    STRUCT(tick_state) TICK_STATE_FIELDS(STATE_ENTRY)
    TICK_LIMITS(LIMIT_ENTRY)
};

int64_t edge_tick_layout(const tick_layout_entry **entries) {
    *entries = LAYOUT;
    return (int64_t)(sizeof LAYOUT / sizeof LAYOUT[0]);
}
