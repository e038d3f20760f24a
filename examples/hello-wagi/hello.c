/* hello-wagi: a WAGI (CGI over WASI) function in C. The request arrives as CGI
 * environment variables and stdin; the response is CGI headers and a body on
 * stdout. fputs rather than printf keeps the module small. */
#include <stdio.h>
#include <stdlib.h>

static void line(const char *label, const char *a, const char *b) {
    fputs(label, stdout);
    fputs(a ? a : "", stdout);
    fputs(b ? b : "", stdout);
    fputc('\n', stdout);
}

int main(void) {
    fputs("Content-Type: text/plain; charset=utf-8\n\n", stdout);
    fputs("Hello from edgefn over WAGI!\n", stdout);
    line("method: ", getenv("REQUEST_METHOD"), 0);
    line("path: ", getenv("SCRIPT_NAME"), getenv("PATH_INFO"));
    const char *query = getenv("QUERY_STRING");
    if (query && *query) line("query: ", query, 0);
    fputs("hello-wagi served a request\n", stderr);
    return 0;
}
