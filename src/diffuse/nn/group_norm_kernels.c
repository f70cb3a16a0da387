/* diffuse's fused GroupNorm + scale-shift + SiLU for float32 channels_last tensors on the
 * CPU: the forward and backward passes of group_norm.py's _GroupNormAct, whose docstring
 * gives the algebra (z = a x + b per image and channel; dx = gain dz + slope x + offset).
 * native.py builds and loads this file.
 *
 * Every tensor is an image-major array of pixels whose channels are contiguous:
 * x[n][p][c] with n < images, p < pixels, c < channels (channels_last of [N, C, H, W]).
 * Per-channel numbers are [images][channels], per-group ones [images][groups].
 *
 * Each image is one task: its sums, then its per-channel numbers, then its per-pixel pass,
 * so that the second pass over the image finds it in the core's cache. Images are shared
 * out over OpenMP threads - PyTorch's own, where this library is loaded into a PyTorch
 * process (one libgomp.so.1 per process): threads of our own would contend with theirs,
 * which spin for a while after each of PyTorch's parallel operations.
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

typedef struct {
    int64_t images, pixels, channels, groups;
    int silu;
} Shape;

/* e^v to about 2 ulp for v in [-87, 88] (clamped outside; NaN stays NaN through the
 * callers' products): v = k ln2 + r, |r| <= ln2/2, e^r by its Taylor polynomial of degree
 * 7, 2^k put into the exponent bits. Written so the compiler vectorises it. */
static inline float exp_clamped(float v) {
    v = v < -87.0f ? -87.0f : (v > 88.0f ? 88.0f : v);
    const float magic = 12582912.0f; /* 1.5 * 2^23: adding it rounds to an integer */
    float k = (v * 1.44269504088896341f + magic) - magic;
    float r = v - k * 0.693145751953125f - k * 1.428606765330187e-06f;
    float p = 1.0f / 5040.0f;
    p = p * r + 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    int32_t bits = ((int32_t)k + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

static inline float sigmoid(float z) { return 1.0f / (1.0f + exp_clamped(-z)); }

/* dL/dz for z = a x + b from dy = dL/dSiLU(z) */
static inline float silu_grad(float dy, float z) {
    float s = sigmoid(z);
    return dy * s * (1.0f + z * (1.0f - s));
}

/* Pixels summed in float before their sums join the float64 totals: few enough that the
 * float rounding stays near float32's own, many enough that the conversions cost little. */
#define BLOCK 32

/* Adds the float block sums to the float64 totals and clears them. */
static inline void flush(int64_t C, float *block, float *block2, double *sum, double *second) {
    for (int64_t c = 0; c < C; ++c) {
        sum[c] += block[c];
        second[c] += block2[c];
        block[c] = block2[c] = 0.0f;
    }
}

/* One image's sums about k = its first pixel (measured from a value of the data, the
 * sums do not grow with the mean, and no digits are lost to it): with dy NULL,
 * sum = sum_p (x - k), second = sum_p (x - k)^2; otherwise, with dz the gradient of
 * z = a x + b, sum = sum_p dz, second = sum_p dz (x - k), and through the SiLU dz is
 * also written to dz_out (the backward pass's second sweep reads it back from the cache
 * instead of computing the sigmoid again). */
static void image_sums(const Shape *s, const float *x, const float *dy, const float *a,
                       const float *b, double *sum, double *second, float *dz_out) {
    const int64_t C = s->channels;
    const float *k = x;
    float block[C], block2[C];
    for (int64_t c = 0; c < C; ++c) sum[c] = second[c] = block[c] = block2[c] = 0.0f;
    for (int64_t p = 0; p < s->pixels; ++p, x += C) {
        if (!dy)
            for (int64_t c = 0; c < C; ++c) {
                float v = x[c] - k[c];
                block[c] += v;
                block2[c] += v * v;
            }
        else if (s->silu)
            for (int64_t c = 0; c < C; ++c) {
                float dz = silu_grad(dy[c], a[c] * x[c] + b[c]);
                dz_out[c] = dz;
                block[c] += dz;
                block2[c] += dz * (x[c] - k[c]);
            }
        else
            for (int64_t c = 0; c < C; ++c) {
                block[c] += dy[c];
                block2[c] += dy[c] * (x[c] - k[c]);
            }
        if (dy) dy += C, dz_out += C;
        if (p % BLOCK == BLOCK - 1) flush(C, block, block2, sum, second);
    }
    flush(C, block, block2, sum, second);
}

typedef struct {
    Shape shape;
    const float *x, *weight, *bias, *scale, *shift; /* scale, shift NULL: plain GroupNorm */
    double eps;
    float *out, *a, *b;
    double *mean, *rstd;
} Forward;

/* Forward pass of image n: group statistics, z = a x + b, out = act(z). */
static void forward_image(const Forward *f, int64_t n) {
    const Shape *s = &f->shape;
    const int64_t C = s->channels, G = s->groups, width = C / G, P = s->pixels;
    const float *x = f->x + n * P * C;
    double sum[C], second[C];
    image_sums(s, x, NULL, NULL, NULL, sum, second, NULL);
    float *a = f->a + n * C, *b = f->b + n * C;
    for (int64_t g = 0; g < G; ++g) {
        /* a group's variance: the mean of its channels' variances plus the variance of
         * their means */
        double mean = 0.0, var = 0.0, spread = 0.0;
        for (int64_t c = g * width; c < (g + 1) * width; ++c) {
            double offset = sum[c] / P;
            mean += x[c] + offset;
            var += second[c] / P - offset * offset;
        }
        mean /= width;
        for (int64_t c = g * width; c < (g + 1) * width; ++c) {
            double d = x[c] + sum[c] / P - mean;
            spread += d * d;
        }
        var = (var + spread) / width;
        double rstd = 1.0 / sqrt((var > 0.0 ? var : 0.0) + f->eps);
        f->mean[n * G + g] = mean;
        f->rstd[n * G + g] = rstd;
        for (int64_t c = g * width; c < (g + 1) * width; ++c) {
            double gain = rstd * f->weight[c], offset = f->bias[c] - mean * gain;
            if (f->scale) {
                double factor = 1.0 + f->scale[n * C + c];
                gain *= factor;
                offset = offset * factor + f->shift[n * C + c];
            }
            a[c] = (float)gain;
            b[c] = (float)offset;
        }
    }
    float *out = f->out + n * P * C;
    for (int64_t p = 0; p < P; ++p, x += C, out += C) {
        if (s->silu)
            for (int64_t c = 0; c < C; ++c) {
                float z = a[c] * x[c] + b[c];
                out[c] = z * sigmoid(z);
            }
        else
            for (int64_t c = 0; c < C; ++c) out[c] = a[c] * x[c] + b[c];
    }
}

typedef struct {
    Shape shape;
    const float *x, *dy, *weight, *scale, *a, *b;
    const double *mean, *rstd;
    float *dx;
    double *dz_sum, *dz_xhat_sum;
} Backward;

/* Backward pass of image n: the sums of dz and dz xhat per channel, then dx. */
static void backward_image(const Backward *k, int64_t n) {
    const Shape *s = &k->shape;
    const int64_t C = s->channels, G = s->groups, width = C / G, P = s->pixels;
    const float *x = k->x + n * P * C, *dy = k->dy + n * P * C;
    const float *a = k->a + n * C, *b = k->b + n * C;
    double *s1 = k->dz_sum + n * C, *sx = k->dz_xhat_sum + n * C;
    float *dx = k->dx + n * P * C;
    image_sums(s, x, dy, a, b, s1, sx, dx);
    float gain[C], slope[C], offset[C];
    for (int64_t g = 0; g < G; ++g) {
        double mean = k->mean[n * G + g], rstd = k->rstd[n * G + g], m1 = 0.0, m2 = 0.0;
        for (int64_t c = g * width; c < (g + 1) * width; ++c) {
            sx[c] = rstd * (sx[c] + (x[c] - mean) * s1[c]); /* sum_p dz xhat */
            double factor = k->scale ? 1.0 + k->scale[n * C + c] : 1.0;
            m1 += k->weight[c] * factor * s1[c];
            m2 += k->weight[c] * factor * sx[c];
        }
        m1 /= (double)(P * width);
        m2 /= (double)(P * width);
        for (int64_t c = g * width; c < (g + 1) * width; ++c) {
            double factor = k->scale ? 1.0 + k->scale[n * C + c] : 1.0;
            double slope_c = -rstd * rstd * m2;
            gain[c] = (float)(rstd * k->weight[c] * factor);
            slope[c] = (float)slope_c;
            offset[c] = (float)(-rstd * m1 - slope_c * mean);
        }
    }
    const float *dz = s->silu ? dx : dy; /* dx holds dz through the SiLU */
    for (int64_t p = 0; p < P; ++p, x += C, dz += C, dx += C)
        for (int64_t c = 0; c < C; ++c) dx[c] = gain[c] * dz[c] + slope[c] * x[c] + offset[c];
}

static int thread_count(int threads, int64_t images) {
    if (threads > images) threads = (int)images;
    return threads < 1 ? 1 : threads;
}

/* out = act(GN(x) (1 + scale) + shift); also a, b [N][C] (z = a x + b) and each group's
 * mean and 1 / sqrt(var + eps) [N][G], which the backward pass takes. */
void diffuse_group_norm_act_forward(const float *x, const float *weight, const float *bias,
                                    const float *scale, const float *shift, int64_t images,
                                    int64_t pixels, int64_t channels, int64_t groups,
                                    double eps, int silu, float *out, float *a, float *b,
                                    double *mean, double *rstd, int threads) {
    Forward f = {{images, pixels, channels, groups, silu}, x, weight, bias, scale, shift, eps,
                 out, a, b, mean, rstd};
#pragma omp parallel for num_threads(thread_count(threads, images)) schedule(static)
    for (int64_t n = 0; n < images; ++n) forward_image(&f, n);
}

/* dx from dy = dL/dout; also per image and channel dz_sum = sum_p dz and dz_xhat_sum =
 * sum_p dz xhat (dz = dL/dz, xhat the normalised x), from which the caller forms the
 * gradients of weight, bias, scale and shift. */
void diffuse_group_norm_act_backward(const float *x, const float *dy, const float *weight,
                                     const float *scale, const float *a, const float *b,
                                     const double *mean, const double *rstd, int64_t images,
                                     int64_t pixels, int64_t channels, int64_t groups,
                                     int silu, float *dx, double *dz_sum,
                                     double *dz_xhat_sum, int threads) {
    Backward k = {{images, pixels, channels, groups, silu}, x, dy, weight, scale, a, b,
                  mean, rstd, dx, dz_sum, dz_xhat_sum};
#pragma omp parallel for num_threads(thread_count(threads, images)) schedule(static)
    for (int64_t n = 0; n < images; ++n) backward_image(&k, n);
}
