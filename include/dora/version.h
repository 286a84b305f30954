#ifndef DORA_VERSION_H
#define DORA_VERSION_H
#define DORA_VERSION "0.1.0"
#endif
