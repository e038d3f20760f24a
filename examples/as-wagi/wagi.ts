// as-wagi: a WAGI (CGI over WASI) program in AssemblyScript. The request arrives as
// CGI variables and stdin, the response goes to stdout.
import { env, logLine, write } from "../../sdk/assemblyscript/assembly/wagi";

const method = env("REQUEST_METHOD");
const query = env("QUERY_STRING");
write("Content-Type: text/plain; charset=utf-8\n\n");
write("Hello from WAGI in AssemblyScript!\n");
write("method: " + method + "\n");
write("query: " + query + "\n");
logLine("as-wagi served a request");
