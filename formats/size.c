/* Human-readable sizes for command lines: "64M", "1.5G". */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

int size_parse(const char *s, uint64_t *out)
{
  char *end;
  double value, scale = 1;

  if (s == NULL || !isdigit((unsigned char)*s))
    return -EINVAL;
  errno = 0;
  value = strtod(s, &end);
  if (errno != 0 || end == s)
    return -EINVAL;
  switch (toupper((unsigned char)*end)) {
  case 'K': scale = 1ULL << 10; end++; break;
  case 'M': scale = 1ULL << 20; end++; break;
  case 'G': scale = 1ULL << 30; end++; break;
  case 'T': scale = 1ULL << 40; end++; break;
  case 'P': scale = 1ULL << 50; end++; break;
  case 'E': scale = 1ULL << 60; end++; break;
  default: break;
  }
  if (scale > 1 && *end == 'i')
    end++;
  if (toupper((unsigned char)*end) == 'B')
    end++;
  if (*end != '\0')
    return -EINVAL;
  value *= scale;
  if (value >= 18446744073709551616.0)
    return -ERANGE;
  if (value != floor(value))
    return -EINVAL;
  *out = (uint64_t)value;
  return 0;
}
