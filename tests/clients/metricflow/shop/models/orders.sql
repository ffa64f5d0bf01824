select * from {{ ref('orders_seed') }}
