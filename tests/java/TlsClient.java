// A Java HTTPS client as Java applications (and Tomcat-based appliances such as CUCM) are: the
// JDK's own PKIX validation with the trust store given by -Djavax.net.ssl.trustStore, hostname
// verification, and revocation checking when -Dcom.sun.net.ssl.checkRevocation=true (OCSP when
// the security property ocsp.enable=true, CRL distribution points with
// -Dcom.sun.security.enableCRLDP=true). Run as `java TlsClient.java URL` (JDK 11+ compiles a
// single source file itself). Prints "status N" and exits 0, or "refused: MESSAGE" and exits 2.
import java.net.URL;
import javax.net.ssl.HttpsURLConnection;

public class TlsClient {
    public static void main(String[] args) throws Exception {
        HttpsURLConnection connection = (HttpsURLConnection) new URL(args[0]).openConnection();
        connection.setConnectTimeout(10000);
        connection.setReadTimeout(10000);
        try {
            System.out.println("status " + connection.getResponseCode());
        } catch (javax.net.ssl.SSLException e) {
            Throwable cause = e;
            while (cause.getCause() != null) {
                cause = cause.getCause();
            }
            System.out.println("refused: " + cause.getMessage());
            System.exit(2);
        }
    }
}
