/* infer.c: run a model that `fluxc build` compiled, from C, on weights from a safetensors file.
 *
 *   fluxc build examples/mlp.flx --out build          # libMlp.so, Mlp.h, Mlp.json
 *   cc -O2 -DMODEL=Mlp -Ibuild examples/c/infer.c -Lbuild -lMlp -Wl,-rpath,'$ORIGIN' -o build/infer
 *   build/infer WEIGHTS.safetensors INPUT.f32 BATCH   # prints BATCH rows of outputs
 *
 * INPUT.f32 holds BATCH input rows as little-endian f32 values, one after another. The weights
 * file must name every tensor of the model with dtype F32 and the model's size; anything else
 * is refused with one line on stderr. See the README's "Using a built library from C".
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef MODEL
#error "compile with -DMODEL=<model name>, e.g. -DMODEL=Mlp"
#endif
#define STR2(x) #x
#define STR(x) STR2(x)
#define CAT3(a, b, c) a##b##c
#define FN(m, f) CAT3(fluxc_, m, f)
#define FLUXC(f) FN(MODEL, _##f)
#define TENSORS2(m) FLUXC_##m##_TENSORS
#define TENSORS(m) TENSORS2(m)
#define PER_ROW2(m, what) FLUXC_##m##_##what##_PER_ROW
#define PER_ROW(m, what) PER_ROW2(m, what)
#include STR(MODEL.h)

/* The whole file, or NULL with a message. */
static unsigned char *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "%s: %s\n", path, strerror(errno));
        return NULL;
    }
    unsigned char *buf = NULL;
    size_t cap = 0, n = 0;
    for (;;) {
        if (n == cap) {
            cap = cap ? cap * 2 : 1 << 16;
            unsigned char *grown = realloc(buf, cap);
            if (!grown) {
                fprintf(stderr, "%s: out of memory\n", path);
                free(buf);
                fclose(f);
                return NULL;
            }
            buf = grown;
        }
        size_t got = fread(buf + n, 1, cap - n, f);
        n += got;
        if (got == 0)
            break;
    }
    fclose(f);
    *len = n;
    return buf;
}

/* Finds tensor `name` in the safetensors JSON header and copies its F32 data (exactly `bytes`
 * long) to `dst`. The header is searched, not fully parsed: enough for files fluxc writes. */
static int load_tensor(const char *path, const char *header, size_t header_len, const unsigned char *data,
                       size_t data_len, const char *name, unsigned char *dst, size_t bytes) {
    char key[512];
    snprintf(key, sizeof key, "\"%s\":", name);
    const char *at = NULL;
    for (const char *p = header; p + strlen(key) <= header + header_len; p++) {
        if (memcmp(p, key, strlen(key)) == 0) {
            at = p + strlen(key);
            break;
        }
    }
    if (!at) {
        fprintf(stderr, "%s: no tensor \"%s\"\n", path, name);
        return 1;
    }
    const char *end = memchr(at, '}', (size_t)(header + header_len - at));
    const char *dtype = strstr(at, "\"dtype\"");
    const char *offs = strstr(at, "\"data_offsets\"");
    if (!end || !dtype || !offs || dtype > end || offs > end) {
        fprintf(stderr, "%s: tensor \"%s\" has no dtype or data_offsets\n", path, name);
        return 1;
    }
    if (!strstr(dtype, "\"F32\"") || strstr(dtype, "\"F32\"") > end) {
        fprintf(stderr, "%s: tensor \"%s\" is not F32\n", path, name);
        return 1;
    }
    unsigned long long begin = 0, stop = 0;
    const char *open = strchr(offs, '[');
    if (!open || open > end || sscanf(open, "[%llu,%llu]", &begin, &stop) != 2) {
        fprintf(stderr, "%s: tensor \"%s\" has unreadable data_offsets\n", path, name);
        return 1;
    }
    if (stop < begin || stop > data_len || stop - begin != bytes) {
        fprintf(stderr, "%s: tensor \"%s\" holds %llu bytes, the model needs %zu\n", path, name, stop - begin,
                bytes);
        return 1;
    }
    memcpy(dst, data + begin, bytes);
    return 0;
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: %s WEIGHTS.safetensors INPUT.f32 BATCH\n", argv[0]);
        return 2;
    }
    char *end = NULL;
    long long batch = strtoll(argv[3], &end, 10);
    if (!end || *end || batch < 1) {
        fprintf(stderr, "BATCH must be a positive integer, not \"%s\"\n", argv[3]);
        return 2;
    }

    /* The weights: an 8-byte little-endian header length, the JSON header, the data. */
    size_t wlen = 0;
    unsigned char *w = read_file(argv[1], &wlen);
    if (!w)
        return 1;
    uint64_t hlen = 0;
    for (int i = 7; i >= 0 && wlen >= 8; i--)
        hlen = (hlen << 8) | w[i];
    if (wlen < 8 || hlen > wlen - 8) {
        fprintf(stderr, "%s: not a safetensors file\n", argv[1]);
        return 1;
    }
    const char *header = (const char *)w + 8;
    const unsigned char *data = w + 8 + hlen;
    size_t data_len = wlen - 8 - hlen;

    unsigned char *params = malloc(FLUXC(param_bytes)());
    if (!params) {
        fprintf(stderr, "out of memory\n");
        return 1;
    }
#define LOAD(name, offset, bytes)                                                                      \
    if (load_tensor(argv[1], header, hlen, data, data_len, name, params + (offset), (bytes)))        \
        return 1;
    TENSORS(MODEL)(LOAD)
#undef LOAD

    /* The input rows. */
    size_t xlen = 0;
    unsigned char *x = read_file(argv[2], &xlen);
    if (!x)
        return 1;
    size_t in_row = PER_ROW(MODEL, INPUT), per_row = PER_ROW(MODEL, OUTPUT);
    if (xlen != (size_t)batch * in_row * 4) {
        fprintf(stderr, "%s: %zu bytes, but %lld rows of %zu f32 values are %zu bytes\n", argv[2], xlen, batch,
                in_row, (size_t)batch * in_row * 4);
        return 1;
    }

    /* Scratch, the output, and the call. */
    void *scratch = malloc(FLUXC(scratch_bytes)(batch));
    float *y = calloc((size_t)batch * per_row, sizeof(float));
    if (!scratch || !y) {
        fprintf(stderr, "out of memory\n");
        return 1;
    }
    int32_t rc = FLUXC(forward)((const float *)params, (const void *)x, y, batch, scratch);
    if (rc != 0) {
        fprintf(stderr, "fluxc_%s_forward returned %d\n", STR(MODEL), rc);
        return 1;
    }
    for (long long b = 0; b < batch; b++) {
        for (size_t j = 0; j < per_row; j++)
            printf(j ? " %.9g" : "%.9g", y[b * per_row + j]);
        printf("\n");
    }
    free(scratch);
    free(y);
    free(x);
    free(params);
    free(w);
    return 0;
}
