/* abi_driver.c: drives a built library through its whole C ABI for tests/tests/library.rs.
 *
 *   abi_driver SEED BATCH X.bin [TARGET.bin STEPS]
 *
 * Prints `init` (the parameter block after fluxc_NAME_init), `forward` (y), and with a train
 * block, per step `step K rc RC loss L` and then `params` and `opt` (the blocks after the
 * steps), each a line of %.9g values; `codes` checks the documented return codes.
 * Compile with -DMODEL=NAME (and -DTRAIN when the model has a train block).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define STR2(x) #x
#define STR(x) STR2(x)
#define CAT3(a, b, c) a##b##c
#define FN(m, f) CAT3(fluxc_, m, f)
#define FLUXC(f) FN(MODEL, _##f)
#define PER_ROW2(m, what) FLUXC_##m##_##what##_PER_ROW
#define PER_ROW(m, what) PER_ROW2(m, what)
#include STR(MODEL.h)

static void *slurp(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        perror(path);
        exit(1);
    }
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    void *buf = malloc(n > 0 ? (size_t)n : 1);
    if (!buf || fread(buf, 1, (size_t)n, f) != (size_t)n) {
        perror(path);
        exit(1);
    }
    fclose(f);
    *len = (size_t)n;
    return buf;
}

static void print_floats(const char *label, const float *v, size_t n) {
    printf("%s", label);
    for (size_t i = 0; i < n; i++)
        printf(" %.9g", v[i]);
    printf("\n");
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: abi_driver SEED BATCH X.bin [TARGET.bin STEPS]\n");
        return 2;
    }
    uint64_t seed = strtoull(argv[1], NULL, 10);
    int64_t batch = strtoll(argv[2], NULL, 10);
    size_t xlen = 0;
    void *x = slurp(argv[3], &xlen);
    size_t pb = FLUXC(param_bytes)();
    float *params = malloc(pb);
    void *scratch = malloc(FLUXC(scratch_bytes)(batch));
    float *y = malloc((size_t)batch * PER_ROW(MODEL, OUTPUT) * sizeof(float));
    if (!params || !scratch || !y)
        return 1;
    int32_t rc = FLUXC(init)(params, seed);
    if (rc != 0) {
        fprintf(stderr, "init returned %d\n", rc);
        return 1;
    }
    print_floats("init", params, pb / 4);
    rc = FLUXC(forward)(params, x, y, batch, scratch);
    if (rc != 0) {
        fprintf(stderr, "forward returned %d\n", rc);
        return 1;
    }
    print_floats("forward", y, (size_t)batch * PER_ROW(MODEL, OUTPUT));
    /* The documented codes: 1 for a batch below 1, 2 for a null pointer. */
    printf("codes %d %d %d\n", FLUXC(forward)(params, x, y, 0, scratch), FLUXC(forward)(params, NULL, y, batch, scratch),
           FLUXC(scratch_bytes)(0) == 0);
#ifdef TRAIN
    if (argc < 6) {
        fprintf(stderr, "a train block needs TARGET.bin and STEPS\n");
        return 2;
    }
    size_t tlen = 0;
    void *target = slurp(argv[4], &tlen);
    int steps = atoi(argv[5]);
    size_t ob = FLUXC(opt_state_bytes)();
    unsigned char *opt = calloc(ob, 1);
    if (!opt)
        return 1;
    for (int s = 1; s <= steps; s++) {
        float loss = 0;
        rc = FLUXC(train_step)(params, (float *)opt, x, target, batch, &loss, scratch);
        uint64_t count = 0;
        memcpy(&count, opt, 8);
        printf("step %d rc %d loss %.9g count %llu\n", s, rc, loss, (unsigned long long)count);
    }
    print_floats("params", params, pb / 4);
    print_floats("opt", (const float *)(opt + 32), (ob - 32) / 4);
#endif
    return 0;
}
