/* hello-wagi: a WAGI (CGI over WASI) function in C. The request arrives as CGI
 * environment variables and stdin; the response is CGI headers and a body on
 * stdout. */
#include <stdio.h>
#include <stdlib.h>

static const char *var(const char *name) {
    const char *v = getenv(name);
    return v ? v : "";
}

int main(void) {
    printf("Content-Type: text/plain; charset=utf-8\n\n");
    printf("Hello from edgefn over WAGI!\n");
    printf("method: %s\n", var("REQUEST_METHOD"));
    printf("path: %s%s\n", var("SCRIPT_NAME"), var("PATH_INFO"));
    const char *query = var("QUERY_STRING");
    if (*query) printf("query: %s\n", query);
    fprintf(stderr, "hello-wagi served %s\n", var("PATH_INFO"));
    return 0;
}
