# Sourced by the benchmark scripts: nginx as a plain reverse proxy with an upstream
# keep-alive pool of 64 (Debian's nginx 1.22, `apt-get install nginx-light`), the practical
# floor of one proxy hop. Defines NGINX (the binary) and:
#   nginx_start DIR LISTEN_PORT UPSTREAM_PORT   # config, logs and pid under DIR
#   nginx_stop DIR
NGINX=${NGINX:-$(command -v nginx || echo /usr/sbin/nginx)}
[ -x "$NGINX" ] || { echo "nginx not found: apt-get install nginx-light" >&2; exit 2; }

nginx_start() {
    local dir=$1 listen=$2 upstream=$3
    mkdir -p "$dir/logs"
    cat > "$dir/nginx.conf" <<CONF
worker_processes auto;
error_log $dir/logs/error.log warn;
pid $dir/nginx.pid;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $dir/body;
    proxy_temp_path $dir/proxy;
    upstream fake {
        server 127.0.0.1:$upstream;
        keepalive 64;
    }
    server {
        listen 127.0.0.1:$listen;
        location / {
            proxy_pass http://fake;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
        }
    }
}
CONF
    "$NGINX" -p "$dir" -c "$dir/nginx.conf"
}

nginx_stop() {
    "$NGINX" -p "$1" -c "$1/nginx.conf" -s stop 2>/dev/null || true
}
