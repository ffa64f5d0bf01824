// pgJDBC over TLS with sslmode=verify-full: connects to <host>:<port> trusting <ca.crt>,
// runs a metric query and prints "ok <region>", or "refused <SQLSTATE> <message>" when the
// driver refuses the server (a certificate that does not name the host).
// Run: java -cp postgresql.jar TlsCheck.java <host> <port> <ca.crt>
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Statement;
import java.util.Properties;

public class TlsCheck {
    public static void main(String[] args) throws Exception {
        String url = "jdbc:postgresql://" + args[0] + ":" + args[1] + "/kpitables";
        Properties props = new Properties();
        props.setProperty("user", "exec");
        props.setProperty("password", "exec");
        props.setProperty("sslmode", "verify-full");
        props.setProperty("sslrootcert", args[2]);
        try (Connection c = DriverManager.getConnection(url, props);
             Statement st = c.createStatement();
             ResultSet rs = st.executeQuery("SELECT region FROM sales WHERE region = 'East'")) {
            rs.next();
            System.out.println("ok " + rs.getString(1));
        } catch (SQLException e) {
            System.out.println("refused " + e.getSQLState() + " " + e.getMessage().replace('\n', ' '));
        }
    }
}
