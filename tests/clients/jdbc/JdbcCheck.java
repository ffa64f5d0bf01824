// Exercises pgJDBC against kpitables the way DBeaver, Metabase and Tableau use it, and
// prints what it saw as tab-separated lines for tests/clients/test_jdbc.py to check.
// Run: java -cp postgresql.jar JdbcCheck.java <host> <port>
import java.math.BigDecimal;
import java.sql.Connection;
import java.sql.DatabaseMetaData;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.ResultSetMetaData;
import java.sql.SQLException;
import java.sql.Statement;
import java.util.Properties;

public class JdbcCheck {
    static void out(String kind, Object... values) {
        StringBuilder line = new StringBuilder(kind);
        for (Object v : values) {
            line.append('\t').append(v);
        }
        System.out.println(line);
    }

    public static void main(String[] args) throws Exception {
        String url = "jdbc:postgresql://" + args[0] + ":" + args[1] + "/kpitables";
        Properties props = new Properties();
        props.setProperty("user", "exec");
        props.setProperty("password", "exec");
        props.setProperty("prepareThreshold", "3");
        props.setProperty("ApplicationName", "kpitables-jdbc-test");
        try (Connection c = DriverManager.getConnection(url, props)) {
            DatabaseMetaData md = c.getMetaData();
            out("product", md.getDatabaseProductName(), md.getDatabaseProductVersion(),
                md.getDriverVersion());
            try (ResultSet rs = md.getSchemas()) {
                while (rs.next()) out("schema", rs.getString("TABLE_SCHEM"));
            }
            try (ResultSet rs = md.getTables(null, "public", "%", null)) {
                while (rs.next()) {
                    out("table", rs.getString("TABLE_NAME"), rs.getString("TABLE_TYPE"),
                        rs.getString("REMARKS"));
                }
            }
            try (ResultSet rs = md.getColumns(null, "public", "sales", "%")) {
                while (rs.next()) {
                    out("column", rs.getString("COLUMN_NAME"), rs.getString("TYPE_NAME"),
                        rs.getInt("DATA_TYPE"), rs.getInt("ORDINAL_POSITION"),
                        rs.getString("REMARKS"));
                }
            }
            try (ResultSet rs = md.getPrimaryKeys(null, "public", "sales")) {
                int n = 0;
                while (rs.next()) n++;
                out("primary_keys", n);
            }
            try (ResultSet rs = md.getImportedKeys(null, "public", "sales")) {
                int n = 0;
                while (rs.next()) n++;
                out("imported_keys", n);
            }
            try (ResultSet rs = md.getIndexInfo(null, "public", "sales", false, true)) {
                int n = 0;
                while (rs.next()) n++;
                out("indexes", n);
            }
            try (ResultSet rs = md.getTypeInfo()) {
                while (rs.next()) out("type_info", rs.getString("TYPE_NAME"), rs.getInt("DATA_TYPE"));
            }

            // Executed more often than prepareThreshold: the driver switches to a named
            // server-side statement, reused with new parameters.
            String sql = "SELECT region, revenue FROM sales WHERE channel = ? ORDER BY region";
            try (PreparedStatement ps = c.prepareStatement(sql)) {
                String[] channels = {"store", "online", "app", "store", "online", "app"};
                for (int i = 0; i < channels.length; i++) {
                    ps.setString(1, channels[i]);
                    try (ResultSet rs = ps.executeQuery()) {
                        ResultSetMetaData rmd = rs.getMetaData();
                        if (i == 0) {
                            out("result_type", rmd.getColumnTypeName(2), rmd.getPrecision(2),
                                rmd.getScale(2));
                        }
                        while (rs.next()) {
                            out("prepared", i, channels[i], rs.getString(1), rs.getBigDecimal(2));
                        }
                    }
                    out("server_prepared", i,
                        ps.unwrap(org.postgresql.PGStatement.class).isUseServerPrepare());
                }
            }

            // setFetchSize inside a transaction: the driver reads through a portal, a few
            // rows per Execute.
            c.setAutoCommit(false);
            try (Statement st = c.createStatement()) {
                st.setFetchSize(7);
                try (ResultSet rs = st.executeQuery(
                        "SELECT order_date__month, revenue FROM sales ORDER BY 1")) {
                    while (rs.next()) out("fetched", rs.getDate(1), rs.getBigDecimal(2));
                }
            }
            c.commit();
            c.setAutoCommit(true);

            // An error keeps the connection usable.
            try (Statement st = c.createStatement()) {
                st.executeQuery("SELECT regin FROM sales");
                out("error", "none");
            } catch (SQLException e) {
                out("error", e.getSQLState(), e.getMessage().replace('\n', ' '));
            }
            try (Statement st = c.createStatement(); ResultSet rs = st.executeQuery("SELECT 1")) {
                rs.next();
                out("after_error", rs.getInt(1));
            }
        }
    }
}
